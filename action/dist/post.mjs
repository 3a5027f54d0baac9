import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);
import {
  docker,
  getState,
  info,
  names,
  removeSandbox,
  summary,
  warning
} from "./shared-355XRIWY.mjs";

// action/post.ts
import { rmSync } from "node:fs";
var LOG_LINES = 30;
async function post() {
  const id = getState("id");
  if (!id) return;
  const n = names(id);
  try {
    const usage = await docker(["exec", n.sidecar, "node", "dist/src/main.js", "usage"]);
    const summary2 = summary;
    if (usage.code === 0) summary2.addRaw(usage.stdout, true);
    else summary2.addRaw("### Model usage (api-proxy)\n\nThe sidecar was not running, so its usage could not be read.\n", true);
    for (const c of [n.sidecar, n.squid]) {
      const logs = await docker(["logs", "--tail", String(LOG_LINES), c]);
      summary2.addDetails(`${c}: last ${LOG_LINES} log lines`, `

\`\`\`
${`${logs.stdout}${logs.stderr}`.trim()}
\`\`\`
`);
    }
    await summary2.write();
  } finally {
    const removed = await removeSandbox(id);
    const dir = getState("dir");
    if (dir) rmSync(dir, { recursive: true, force: true });
    info(`api-proxy sandbox ${id}: removed ${removed.containers} containers and ${removed.networks} networks`);
    for (const f of removed.failed) warning(`api-proxy sandbox ${id}: could not remove ${f.what}: ${f.why}`);
  }
}
post().catch((err) => warning(`api-proxy post step: ${err.message}`));
