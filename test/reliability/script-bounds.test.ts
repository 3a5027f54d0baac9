import { spawn } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { run, type Ran } from '../../testkit/run.js';

/**
 * The test scripts' bounds, proved with faults: stand-ins on PATH that never
 * answer, a held apt lock, pid files an earlier run left. Each script runs from
 * a copy of scripts/ in a temporary checkout (its .cache/ is that one's), with
 * short bounds set through the environment; each must end on its own, well
 * within this harness's own limit, naming the step it stopped.
 */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const HARNESS_LIMIT = 60_000;
const root = process.getuid?.() === 0;
const rootWhy = root ? null : 'starting an engine and locking apt need root';
if (rootWhy && process.env.API_PROXY_REQUIRE_ALL === '1') throw new Error(`the script bound tests cannot run: ${rootWhy}`);

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A checkout with this one's scripts/, a run dir, and a bin/ of stand-ins first on PATH. */
function checkout(standIns: Record<string, string>): { dir: string; env: Record<string, string> } {
  const dir = mkdtempSync(join(tmpdir(), 'api-proxy-bounds-'));
  dirs.push(dir);
  cpSync(join(ROOT, 'scripts'), join(dir, 'scripts'), { recursive: true });
  mkdirSync(join(dir, 'bin'));
  for (const [name, body] of Object.entries(standIns)) {
    writeFileSync(join(dir, 'bin', name), `#!/usr/bin/env bash\n${body}\n`);
    chmodSync(join(dir, 'bin', name), 0o755);
  }
  const env = {
    PATH: `${join(dir, 'bin')}:${process.env.PATH ?? ''}`,
    API_PROXY_RUN_DIR: join(dir, 'run'),
    API_PROXY_BOUND_GRACE: '1',
  };
  return { dir, env };
}

const script = async (dir: string, name: string, env: Record<string, string>): Promise<Ran & { ms: number }> => {
  const t0 = performance.now();
  const r = await run('bash', [join(dir, 'scripts', name)], { cwd: dir, env: { ...process.env, ...env }, timeoutMs: HARNESS_LIMIT });
  return { ...r, ms: performance.now() - t0 };
};

/** A stand-in that records its PID in FILE and then waits, as a hung command does. */
const hangs = (file: string) => `echo $$ > ${file}\nexec sleep 300`;
const alive = (pid: number): boolean => {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};
const pidIn = (file: string): number => Number(readFileSync(file, 'utf8').trim());

describe('container-test.sh and its engine', () => {
  it('ends, naming the step, when a docker accepts and never answers `info`', async () => {
    const { dir, env } = checkout({ dockerd: 'exit 0', 'docker-compose': 'exit 0', debootstrap: 'exit 0' });
    writeFileSync(join(dir, 'bin', 'docker'), `#!/usr/bin/env bash\n[ "$1" = info ] && { ${hangs(join(dir, 'info.pid'))}; }\nexit 1\n`);
    chmodSync(join(dir, 'bin', 'docker'), 0o755);
    const r = await script(dir, 'container-test.sh', { ...env, API_PROXY_BOUND_docker_info: '1' });
    expect(r.code, r.stderr).not.toBe(0);
    expect(r.code, 'killed by the harness, not ended by its bound').not.toBeNull();
    expect(r.stderr).toContain('api-proxy: docker info did not finish within 1 s and was stopped; look at the engine behind /var/run/docker.sock');
    expect(r.stderr).toMatch(/an engine holds \/var\/run\/docker\.sock and does not answer .*left alone/);
    expect(alive(pidIn(join(dir, 'info.pid'))), 'the hung docker is stopped').toBe(false);
    // Failed fast: no second engine, no images, no tests.
    expect(r.stdout).not.toContain('== base images');
    expect(existsSync(join(dir, '.cache', 'dockerd.log'))).toBe(false);
  });

  it.skipIf(rootWhy !== null)(`ends, naming the engine's log, when an engine it starts never answers${rootWhy ? ` (skipped: ${rootWhy})` : ''}`, async () => {
    const { dir, env } = checkout({ docker: 'exit 1', 'docker-compose': 'exit 0', debootstrap: 'exit 0' });
    writeFileSync(join(dir, 'bin', 'dockerd'), `#!/usr/bin/env bash\necho starting\n${hangs(join(dir, 'dockerd.pid'))}\n`);
    chmodSync(join(dir, 'bin', 'dockerd'), 0o755);
    const r = await script(dir, 'container-test.sh', { ...env, API_PROXY_BOUND_engine_start: '2' });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stdout).toContain('== engine start: started');
    expect(r.stdout).toMatch(/== engine start: failed \(exit 1\) in \d+ s/);
    expect(r.stderr).toMatch(/api-proxy: the engine's start did not finish within 2 s \(dockerd pid \d+\); look at \.cache\/dockerd\.log:\nstarting/);
    // Stopped by its PID on the way out, and its record gone with it.
    expect(alive(pidIn(join(dir, 'dockerd.pid')))).toBe(false);
    expect(existsSync(join(dir, 'run', 'dockerd.pid'))).toBe(false);
  });
});

describe('container-bases.sh', () => {
  it('ends, naming the step and its log, when debootstrap hangs', async () => {
    const { dir, env } = checkout({ docker: 'exit 1' });
    writeFileSync(join(dir, 'bin', 'debootstrap'), `#!/usr/bin/env bash\n${hangs(join(dir, 'debootstrap.pid'))}\n`);
    chmodSync(join(dir, 'bin', 'debootstrap'), 0o755);
    const r = await script(dir, 'container-bases.sh', { ...env, API_PROXY_BOUND_debootstrap: '1' });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain('api-proxy: debootstrap of bookworm did not finish within 1 s and was stopped; look at .cache/stand-in/debootstrap.log');
    expect(alive(pidIn(join(dir, 'debootstrap.pid')))).toBe(false);
  });

  it('ends when the engine accepts `image inspect` and never answers it', async () => {
    const { dir, env } = checkout({ debootstrap: 'exit 0' });
    writeFileSync(join(dir, 'bin', 'docker'), `#!/usr/bin/env bash\n[ "$1 $2" = "image inspect" ] && { ${hangs(join(dir, 'inspect.pid'))}; }\nexit 1\n`);
    chmodSync(join(dir, 'bin', 'docker'), 0o755);
    const r = await script(dir, 'container-bases.sh', { ...env, API_PROXY_BOUND_image_inspect: '1' });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain('api-proxy: docker image inspect debian:bookworm-slim did not finish within 1 s');
    expect(alive(pidIn(join(dir, 'inspect.pid')))).toBe(false);
  });
});

describe.skipIf(rootWhy !== null)(`apt-install.sh and a held lock${rootWhy ? ` (skipped: ${rootWhy})` : ''}`, () => {
  /** apt with its state, lists and dpkg admin dir in DIR, and no sources: nothing of the machine's touched. */
  const aptIn = (dir: string): Record<string, string> => {
    for (const d of ['lists/partial', 'cache/archives/partial', 'parts', 'admin']) mkdirSync(join(dir, d), { recursive: true });
    writeFileSync(join(dir, 'admin', 'status'), '');
    const conf = join(dir, 'apt.conf');
    writeFileSync(
      conf,
      [
        `Dir::State::status "${dir}/admin/status";`,
        `Dir::State::Lists "${dir}/lists";`,
        `Dir::Cache "${dir}/cache";`,
        'Dir::Etc::sourcelist "/dev/null";',
        `Dir::Etc::sourceparts "${dir}/parts";`,
      ].join('\n'),
    );
    return { APT_CONFIG: conf };
  };
  /** Holds an fcntl lock on FILE, as apt and dpkg take theirs, until killed. */
  const holdLock = async (file: string) => {
    const holder = spawn('/usr/bin/python3', ['-c', 'import fcntl,sys,time\nf=open(sys.argv[1],"a")\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint("held",flush=True)\ntime.sleep(300)', file], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      holder.stdout.once('data', () => resolve());
      holder.once('exit', () => reject(new Error('the lock holder exited')));
    });
    return holder;
  };

  for (const [what, lock] of [
    ['the lists lock (apt-get update)', 'lists/lock'],
    ["dpkg's frontend lock (apt-get install)", 'admin/lock-frontend'],
  ] as const) {
    it(`gives up within its bound on ${what}, naming the holder's PID`, async () => {
      const { dir, env } = checkout({});
      const apt = aptIn(join(dir, 'apt'));
      const holder = await holdLock(join(dir, 'apt', lock));
      try {
        const t0 = performance.now();
        const r = await run('bash', [join(dir, 'scripts', 'apt-install.sh'), 'api-proxy-no-such-package'], {
          env: { ...process.env, ...env, ...apt, API_PROXY_BOUND_apt_lock: '2' },
          timeoutMs: HARNESS_LIMIT,
        });
        expect(r.code, r.stderr).toBe(75);
        expect(r.stderr).toContain(`apt-install: ${join(dir, 'apt', lock)} is held by pid ${holder.pid} (/usr/bin/python3 -c`);
        expect(r.stderr).toContain('gave up after 2 s');
        expect(performance.now() - t0).toBeLessThan(HARNESS_LIMIT / 2);
      } finally {
        holder.kill('SIGKILL');
      }
    });
  }
});

describe('leftovers.sh and the pid files of an earlier run', () => {
  it('stops a process the scripts recorded, by its PID, and says so', async () => {
    const { dir, env } = checkout({});
    // Started as an earlier run's engine would be, then orphaned: its starter is gone.
    const started = await run('bash', ['-c', 'sleep 300 >/dev/null 2>&1 & echo $!'], { timeoutMs: 10_000 });
    const pid = Number(started.stdout.trim());
    expect(alive(pid)).toBe(true);
    const recorded = await run('bash', ['-c', `. scripts/lib/pids.sh && pid_record dockerd ${pid}`], { cwd: dir, env: { ...process.env, ...env }, timeoutMs: 10_000 });
    expect(recorded.code, recorded.stderr).toBe(0);
    const r = await script(dir, 'leftovers.sh', env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`leftovers: stopping pid ${pid} (sleep 300), left running by an earlier run`);
    expect(alive(pid)).toBe(false);
    expect(existsSync(join(dir, 'run', 'dockerd.pid'))).toBe(false);
  });

  it('leaves alone a process that now holds a recorded PID, and forgets the record', async () => {
    const { dir, env } = checkout({});
    mkdirSync(join(dir, 'run'));
    // This test's own PID, with a start time it never had: the number was reused.
    writeFileSync(join(dir, 'run', 'dockerd.pid'), `${process.pid} 1 dockerd\n`);
    const r = await script(dir, 'leftovers.sh', env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`leftovers: dockerd.pid names pid ${process.pid}, now another process (`);
    expect(r.stderr).toContain('left alone');
    expect(alive(process.pid)).toBe(true);
    expect(existsSync(join(dir, 'run', 'dockerd.pid'))).toBe(false);
  });
});

describe('phases and the run as a whole', () => {
  it("prints each phase as it starts and ends with its seconds (wherever the command's output goes), and a line of them all", async () => {
    const { dir } = checkout({});
    const r = await run('bash', ['-c', '. scripts/lib/bound.sh; phase one echo hidden > /dev/null; phase two false || true; phase_summary'], { cwd: dir, timeoutMs: 10_000 });
    expect(r.stdout).toMatch(/^== one: started\n== one: ok in \d+ s\n== two: started\n== two: failed \(exit 1\) in \d+ s\nphases: one \d+ s; two \d+ s\n$/);
  });

  it('.ci/run stops every process of a run past its bound and names the phase it was in', async () => {
    const { dir } = checkout({});
    mkdirSync(join(dir, '.ci'));
    cpSync(join(ROOT, '.ci', 'run'), join(dir, '.ci', 'run'));
    // A phase whose command sits in a process group of its own, as timeout(1) puts it.
    writeFileSync(
      join(dir, 'scripts', 'test.sh'),
      '. scripts/lib/bound.sh\nstuck() { timeout 300 sleep 300 & echo $! > .cache/stuck.pid; wait; }\nphase "a stuck phase" stuck\n',
    );
    const t0 = performance.now();
    const r = await run('bash', ['.ci/run'], { cwd: dir, env: { ...process.env, API_PROXY_BOUND_ci: '2' }, timeoutMs: HARNESS_LIMIT });
    expect(r.code, r.stderr).not.toBe(0);
    expect(r.code).not.toBeNull();
    expect(r.stderr).toContain('ci: the run did not end within 2 s, in the phase: a stuck phase; stopping it');
    expect(alive(pidIn(join(dir, '.cache', 'stuck.pid')))).toBe(false);
    expect(performance.now() - t0).toBeLessThan(HARNESS_LIMIT / 2);
  });
});

describe("the tests' command runner", () => {
  it('returns when the command exits, though a process it left behind holds its output', async () => {
    const t0 = performance.now();
    const r = await run('bash', ['-c', 'sleep 300 & echo $!'], { timeoutMs: HARNESS_LIMIT });
    expect(r.code).toBe(0);
    expect(performance.now() - t0).toBeLessThan(HARNESS_LIMIT / 2);
    process.kill(Number(r.stdout.trim()), 'SIGKILL');
  });

  it('says in stderr which command it killed at its time limit', async () => {
    const r = await run('sleep', ['300'], { timeoutMs: 200 });
    expect(r.code).toBeNull();
    expect(r.stderr).toContain('[run] sleep 300: killed at its time limit of 200 ms');
  });
});
