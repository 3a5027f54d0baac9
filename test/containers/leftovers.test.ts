import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, type Ran } from '../../testkit/run.js';

/**
 * scripts/engine-leftovers.sh against the real engine: what a killed container
 * test left (its compose project's container, network and volume; the Action
 * test's labelled network) is removed when its test process is gone, and kept
 * while it runs. scripts/container-test.sh provides the engine.
 */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const sh = (cmd: string, args: string[]): Promise<Ran> => run(cmd, args, { cwd: ROOT, timeoutMs: 60_000 });
const docker = async (...args: string[]): Promise<string> => {
  const r = await sh('docker', args);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim();
};
const why = spawnSync('docker', ['info'], { timeout: 20_000 }).status === 0 ? null : 'no Docker engine answers; scripts/container-test.sh starts one';
if (why && process.env.API_PROXY_REQUIRE_ALL === '1') throw new Error(`the engine leftovers test cannot run: ${why}`);

describe.skipIf(why !== null)(`what a killed container test left in the engine${why ? ` (skipped: ${why})` : ''}`, () => {
  // A PID no process holds now: a child that has exited.
  const gone = spawnSync('true').pid;
  const live = process.pid;
  const project = (pid: number) => ['--label', `com.docker.compose.project=apxtest${pid}`];
  const names = { goneNet: `apxtest${gone}_default`, goneVol: `apxtest${gone}_pki`, goneBox: `apxtest${gone}_box`, actionNet: `api-proxy-test-upstream-${gone}`, liveNet: `apxtest${live}_default` };

  beforeAll(async () => {
    await docker('network', 'create', ...project(gone), names.goneNet);
    await docker('volume', 'create', ...project(gone), names.goneVol);
    await docker('create', '--name', names.goneBox, ...project(gone), '--network', names.goneNet, '-v', `${names.goneVol}:/v`, 'debian:bookworm-slim', 'true');
    await docker('network', 'create', '--label', `io.github.api-proxy.action-test=${gone}`, names.actionNet);
    await docker('network', 'create', ...project(live), names.liveNet);
  });
  afterAll(async () => {
    await sh('docker', ['rm', '-f', names.goneBox]);
    await sh('docker', ['network', 'rm', names.goneNet, names.actionNet, names.liveNet]);
    await sh('docker', ['volume', 'rm', names.goneVol]);
  });

  it("removes the gone test's container, networks and volume, says so, and keeps a running test's", async () => {
    const r = await sh('bash', ['scripts/engine-leftovers.sh']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`leftovers: removing 1 container\\(s\\) of test processes that are gone \\(pids ${gone}\\)`));
    expect(r.stderr).toMatch(new RegExp(`leftovers: removing 2 network\\(s\\) of test processes that are gone \\(pids ${gone}\\)`));
    expect(r.stderr).toMatch(new RegExp(`leftovers: removing 1 volume\\(s\\) of test processes that are gone \\(pids ${gone}\\)`));
    expect(await docker('ps', '-aq', '--filter', `name=^${names.goneBox}$`)).toBe('');
    expect(await docker('network', 'ls', '-q', '--filter', `name=^${names.goneNet}$`)).toBe('');
    expect(await docker('network', 'ls', '-q', '--filter', `name=^${names.actionNet}$`)).toBe('');
    expect(await docker('volume', 'ls', '-q', '--filter', `name=^${names.goneVol}$`)).toBe('');
    expect(await docker('network', 'ls', '-q', '--filter', `name=^${names.liveNet}$`)).not.toBe('');
  });
});
