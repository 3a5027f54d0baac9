import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { run, type Ran } from './run.js';

/**
 * An `agent` network namespace whose only peer is the host end of a veth pair:
 * the sidecar listens there. Loopback services on the host (Squid, the fake
 * upstream) and everything else are out of its reach, as in the product's
 * sandbox. Needs root and iproute2.
 */

const IP = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip'].find((p) => existsSync(p));

/** Why namespaces cannot be made here, or null when they can. */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  if (!IP) return 'iproute2 (ip) is not installed';
  return null;
}

export interface AgentNamespace {
  name: string;
  /** The host end: where the sidecar listens for the agent. */
  hostAddress: string;
  agentAddress: string;
  /** Runs a command inside the namespace. */
  run(command: string, args: string[], opts?: { env?: Record<string, string>; timeoutMs?: number }): Promise<Ran>;
  close(): void;
}

const ip = (...args: string[]): void => {
  execFileSync(IP!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
};

export function createAgentNamespace(): AgentNamespace {
  const why = netnsUnavailable();
  if (why) throw new Error(why);
  // Distinct per process, so parallel runs do not collide; a /30 in the test range of this host only.
  const n = process.pid % 250;
  const name = `apxagent${process.pid}`;
  const host = `apxh${process.pid}`.slice(0, 15);
  const peer = `apxa${process.pid}`.slice(0, 15);
  const hostAddress = `10.213.${n}.1`;
  const agentAddress = `10.213.${n}.2`;
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
    ip('netns', 'exec', name, 'ip', 'addr', 'add', `${agentAddress}/30`, 'dev', peer);
    ip('netns', 'exec', name, 'ip', 'link', 'set', peer, 'up');
    ip('netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up');
  } catch (err) {
    close();
    throw err;
  }

  return {
    name,
    hostAddress,
    agentAddress,
    close,
    run: (command, args, opts = {}) =>
      run(IP!, ['netns', 'exec', name, command, ...args], { env: opts.env ?? { PATH: process.env.PATH ?? '' }, timeoutMs: opts.timeoutMs ?? 60_000 }),
  };
}
