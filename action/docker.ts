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

/** What removing a sandbox did: how many of each went, and each thing that did not, with why. */
export interface Removed {
  containers: number;
  networks: number;
  failed: { what: string; why: string }[];
}

const lastLine = (text: string): string => text.trim().split('\n').at(-1) ?? '';

/**
 * Removes every container, then every network, that carries this sandbox's
 * label; nothing else. Goes on past what fails, and says exactly what was not
 * removed and why (a network with a container of someone else's attached).
 */
export async function removeSandbox(id: string): Promise<Removed> {
  const filter = ['--filter', `label=${LABEL}=${id}`];
  const failed: Removed['failed'] = [];
  const list = async (args: string[]): Promise<string[]> => (await docker(args)).stdout.split('\n').filter(Boolean);
  const containers = await list(['ps', '-a', '--format', '{{.Names}}', ...filter]);
  let removedContainers = 0;
  for (const c of containers) {
    const r = await docker(['rm', '-f', '-v', c]);
    if (r.code === 0) removedContainers++;
    else failed.push({ what: `container ${c}`, why: lastLine(r.stderr || r.stdout) });
  }
  const networks = await list(['network', 'ls', '--format', '{{.Name}}', ...filter]);
  let removedNetworks = 0;
  for (const net of networks) {
    const r = await docker(['network', 'rm', net]);
    if (r.code === 0) {
      removedNetworks++;
      continue;
    }
    const attached = (await docker(['network', 'inspect', '-f', '{{range .Containers}}{{.Name}} {{end}}', net])).stdout.trim();
    failed.push({ what: `network ${net}`, why: `${lastLine(r.stderr || r.stdout)}${attached ? ` (still attached: ${attached})` : ''}` });
  }
  return { containers: removedContainers, networks: removedNetworks, failed };
}
