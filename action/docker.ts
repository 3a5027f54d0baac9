import { execFile } from 'node:child_process';

/**
 * The docker CLI, run without a shell. Secrets never go in its arguments (they
 * would show in `ps`): they go in files the containers read.
 */
export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

export function docker(args: string[], timeoutMs = 600_000): Promise<Ran> {
  return new Promise((resolve) => {
    execFile('docker', args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** Runs docker and returns its stdout, or throws with what it said. */
export async function dockerOk(args: string[], timeoutMs?: number): Promise<string> {
  const r = await docker(args, timeoutMs);
  if (r.code !== 0) throw new Error(`docker ${args[0]} failed (${r.code}): ${(r.stderr || r.stdout).trim().split('\n').slice(-5).join(' | ')}`);
  return r.stdout.trim();
}

/** The label every container and network of one sandbox carries: post removes exactly these. */
export const LABEL = 'io.github.api-proxy.action';

export const names = (id: string) => ({
  sandbox: `api-proxy-${id}-sandbox`,
  egress: `api-proxy-${id}-egress`,
  internet: `api-proxy-${id}-internet`,
  squid: `api-proxy-${id}-squid`,
  sidecar: `api-proxy-${id}-sidecar`,
});

/** Removes every container, then every network, that carries this sandbox's label; nothing else. */
export async function removeSandbox(id: string): Promise<{ containers: number; networks: number }> {
  const filter = ['--filter', `label=${LABEL}=${id}`];
  const containers = (await docker(['ps', '-aq', ...filter])).stdout.split('\n').filter(Boolean);
  if (containers.length > 0) await docker(['rm', '-f', '-v', ...containers]);
  const networks = (await docker(['network', 'ls', '-q', ...filter])).stdout.split('\n').filter(Boolean);
  if (networks.length > 0) await docker(['network', 'rm', ...networks]);
  return { containers: containers.length, networks: networks.length };
}
