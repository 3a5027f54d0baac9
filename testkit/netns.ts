import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { run, type Ran } from './run.js';

/**
 * Network namespaces joined to this host by a veth pair, a /30 each: the
 * namespace's only peer is the host end. Needs root and iproute2.
 * - agent: the agent's sandbox. The sidecar listens on the host end; loopback
 *   services on the host (Squid, the fake upstream) and everything else are
 *   out of its reach, as in the product's sandbox.
 * - egress: Squid's host. Its subnet is in 198.18.0.0/15 (RFC 2544's range for
 *   testing network devices), outside every range Squid refuses to tunnel to,
 *   so the fake upstream on the host end stands where the public API would.
 */

export const IP = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip'].find((p) => existsSync(p));

/** Why namespaces cannot be made here, or null when they can. */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  if (!IP) return 'iproute2 (ip) is not installed';
  return null;
}

export interface Namespace {
  name: string;
  /** The host end of the veth pair. */
  hostAddress: string;
  /** The namespace's end. */
  peerAddress: string;
  /** Runs a command inside the namespace. */
  run(command: string, args: string[], opts?: { env?: Record<string, string>; timeoutMs?: number }): Promise<Ran>;
  /** argv that runs `command` inside the namespace, for callers that spawn it themselves. */
  argv(command: string[]): string[];
  close(): void;
}

const ip = (...args: string[]): void => {
  execFileSync(IP!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
};

const NETWORKS = { agent: '10.213', egress: '198.18' } as const;

function createNamespace(role: keyof typeof NETWORKS): Namespace {
  const why = netnsUnavailable();
  if (why) throw new Error(why);
  // Distinct per process and role, so parallel test files do not collide.
  const n = process.pid % 250;
  const tag = `apx${role[0]}${process.pid}`;
  const name = `${tag}ns`;
  const host = `${tag}h`.slice(0, 15);
  const peer = `${tag}p`.slice(0, 15);
  const hostAddress = `${NETWORKS[role]}.${n}.1`;
  const peerAddress = `${NETWORKS[role]}.${n}.2`;
  const close = (): void => {
    try {
      ip('netns', 'del', name);
    } catch {
      /* already gone */
    }
    try {
      ip('link', 'del', host);
    } catch {
      /* deleting the namespace removed the pair */
    }
  };
  close();
  try {
    ip('netns', 'add', name);
    ip('link', 'add', host, 'type', 'veth', 'peer', 'name', peer);
    ip('link', 'set', peer, 'netns', name);
    ip('addr', 'add', `${hostAddress}/30`, 'dev', host);
    ip('link', 'set', host, 'up');
    ip('netns', 'exec', name, 'ip', 'addr', 'add', `${peerAddress}/30`, 'dev', peer);
    ip('netns', 'exec', name, 'ip', 'link', 'set', peer, 'up');
    ip('netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up');
  } catch (err) {
    close();
    throw err;
  }

  const argv = (command: string[]): string[] => [IP!, 'netns', 'exec', name, ...command];
  return {
    name,
    hostAddress,
    peerAddress,
    close,
    argv,
    run: (command, args, opts = {}) => {
      const [bin, ...rest] = argv([command, ...args]);
      return run(bin!, rest, { env: opts.env ?? { PATH: process.env.PATH ?? '' }, timeoutMs: opts.timeoutMs ?? 60_000 });
    },
  };
}

export const createAgentNamespace = (): Namespace => createNamespace('agent');
export const createEgressNamespace = (): Namespace => createNamespace('egress');
