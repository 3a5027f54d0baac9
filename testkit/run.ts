import { spawn } from 'node:child_process';

export interface Ran {
  /** The exit code; null when killed at the time limit or never started (see error). */
  code: number | null;
  stdout: string;
  stderr: string;
  error?: Error;
}

/** How long output may still arrive after the command exits: a process it left behind may hold its pipes. */
const DRAIN_MS = 2_000;

/**
 * Runs a command to its end without blocking the event loop, killed at
 * `timeoutMs` (said at the end of its stderr, so an assertion names the step).
 * Resolves when the command has exited and its output is read, or DRAIN_MS
 * after its exit when something it started still holds the pipes.
 */
export function run(
  command: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {},
): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let drain: NodeJS.Timeout | undefined;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const limit = opts.timeoutMs ?? 60_000;
    const timer = setTimeout(() => {
      stderr += `\n[run] ${command} ${args.join(' ')}: killed at its time limit of ${limit} ms\n`;
      child.kill('SIGKILL');
    }, limit);
    const done = (ran: Ran): void => {
      clearTimeout(timer);
      clearTimeout(drain);
      child.stdout.destroy();
      child.stderr.destroy();
      resolve(ran);
    };
    child.on('error', (error) => done({ code: null, stdout, stderr, error }));
    child.on('exit', (code) => {
      drain = setTimeout(() => done({ code, stdout, stderr }), DRAIN_MS);
    });
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}
