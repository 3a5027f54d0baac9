import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { run } from '../testkit/run.js';

/**
 * The Action's bundled post step as the runner runs it (state as STATE_*, the
 * summary file), against a docker stand-in on PATH whose engine will not
 * remove one network: a container someone else started is still attached.
 */
const POST = fileURLToPath(new URL('../action/dist/post.mjs', import.meta.url));

describe("the Action's post step, when a network cannot be removed", () => {
  it('removes what it can, says exactly what it could not and why, and exits 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'api-proxy-post-'));
    const calls = join(dir, 'calls.log');
    writeFileSync(
      join(dir, 'docker'),
      `#!/usr/bin/env bash
echo "$*" >> ${calls}
case "$1 $2" in
  "ps -a") printf 'api-proxy-run1-sidecar\\napi-proxy-run1-squid\\n' ;;
  "network ls") printf 'api-proxy-run1-sandbox\\napi-proxy-run1-egress\\n' ;;
  "network rm") if [ "$3" = api-proxy-run1-egress ]; then echo "Error response from daemon: error while removing network: network api-proxy-run1-egress id 3f2a has active endpoints" >&2; exit 1; fi ;;
  "network inspect") echo "stray-agent " ;;
  "exec "*) exit 1 ;;
esac
exit 0
`,
    );
    chmodSync(join(dir, 'docker'), 0o755);
    const summary = join(dir, 'summary.md');
    writeFileSync(summary, '');
    const r = await run(process.execPath, [POST], {
      env: { PATH: `${dir}:${process.env.PATH ?? ''}`, STATE_id: 'run1', GITHUB_STEP_SUMMARY: summary },
      timeoutMs: 30_000,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('api-proxy sandbox run1: removed 2 containers and 1 networks');
    expect(r.stdout).toContain(
      '::warning::api-proxy sandbox run1: could not remove network api-proxy-run1-egress: Error response from daemon: error while removing network: network api-proxy-run1-egress id 3f2a has active endpoints (still attached: stray-agent)',
    );
    expect(r.stdout).not.toContain('::error::');
    // Every network was tried, each on its own: one that fails does not stop the next.
    expect(readFileSync(calls, 'utf8')).toMatch(/network rm api-proxy-run1-sandbox\nnetwork rm api-proxy-run1-egress\n/);
    expect(readFileSync(summary, 'utf8')).toContain('The sidecar was not running');
  });
});
