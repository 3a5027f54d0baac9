// The Action's post step, run whatever happened before it: what the agent spent
// into the job summary, then every container and network of this sandbox removed.
import * as core from '@actions/core';
import { rmSync } from 'node:fs';
import { docker, names, removeSandbox } from './docker.js';

const LOG_LINES = 30;

async function post(): Promise<void> {
  const id = core.getState('id');
  if (!id) return; // main never got as far as naming a sandbox
  const n = names(id);
  try {
    const usage = await docker(['exec', n.sidecar, 'node', 'dist/src/main.js', 'usage']);
    const summary = core.summary;
    if (usage.code === 0) summary.addRaw(usage.stdout, true);
    else summary.addRaw('### Model usage (api-proxy)\n\nThe sidecar was not running, so its usage could not be read.\n', true);
    // A post step cannot see whether the job failed: the last lines of both are always
    // there, folded, for when it did (the key is not in them: the sidecar never logs it).
    for (const c of [n.sidecar, n.squid]) {
      const logs = await docker(['logs', '--tail', String(LOG_LINES), c]);
      summary.addDetails(`${c}: last ${LOG_LINES} log lines`, `\n\n\`\`\`\n${`${logs.stdout}${logs.stderr}`.trim()}\n\`\`\`\n`);
    }
    await summary.write();
  } finally {
    const removed = await removeSandbox(id);
    const dir = core.getState('dir');
    if (dir) rmSync(dir, { recursive: true, force: true });
    core.info(`api-proxy sandbox ${id}: removed ${removed.containers} containers and ${removed.networks} networks`);
    // Said, not failed: the job's own result is what the run is about, and the rest was removed.
    for (const f of removed.failed) core.warning(`api-proxy sandbox ${id}: could not remove ${f.what}: ${f.why}`);
  }
}

// A post step that fails would mark a passing job failed for a cleanup: say it, exit 0.
post().catch((err: unknown) => core.warning(`api-proxy post step: ${(err as Error).message}`));
