import { startFakeUpstream, type FakeUpstream } from '../../testkit/fake-upstream.js';
import { afterAll, beforeAll } from 'vitest';
import { createAgentNamespace, createEgressNamespace, netnsUnavailable, type Namespace } from '../../testkit/netns.js';
import { SQUID_BIN, startProductSquid, type ProductSquidOptions, type Squid } from '../../testkit/squid.js';
import { FAKE_HOST } from '../../testkit/test-ca.js';
import { startSidecar, testPki, type Sidecar } from './sidecar.js';

/** Why the shipped egress cannot run here, or null when it can. */
export const shippedEgressUnavailable = (): string | null => netnsUnavailable() ?? (SQUID_BIN ? null : 'squid is not installed');

export interface ShippedEgress {
  /** Squid's host: Squid listens on its 3128, the fake upstream on the host end's 443. */
  ns: Namespace;
  fake: FakeUpstream;
  squid: Squid;
  /** Where FAKE_HOST (and `names`) resolve for Squid: a public-range address, as api.openai.com's is. */
  upstreamAddress: string;
  close(): Promise<void>;
}

/**
 * The product's Squid (squid/, as shipped) in a namespace of its own, in front
 * of the TLS fake upstream on port 443 (the only port Squid tunnels to) at an
 * address outside every range Squid refuses. FAKE_HOST and each of `names`
 * resolve to the fake; `hosts` adds other names. Needs root.
 */
export async function startShippedEgress(
  opts: { names?: string[]; hosts?: Record<string, string> } & Omit<ProductSquidOptions, 'hosts'>,
): Promise<ShippedEgress> {
  const ns = createEgressNamespace();
  const upstreamAddress = ns.hostAddress;
  let fake: FakeUpstream | undefined;
  try {
    fake = await startFakeUpstream({ pki: testPki(), listenHost: upstreamAddress, port: 443, hostname: FAKE_HOST, keepAliveTimeoutMs: 60_000 });
    const names = Object.fromEntries([FAKE_HOST, ...(opts.names ?? [])].map((n) => [n, upstreamAddress]));
    const squid = await startProductSquid(ns, { ...opts, hosts: { ...names, ...opts.hosts } });
    const started = fake;
    return {
      ns,
      fake: started,
      squid,
      upstreamAddress,
      close: async () => {
        await squid.stop();
        await started.close();
        ns.close();
      },
    };
  } catch (err) {
    await fake?.close();
    ns.close();
    throw err;
  }
}

export interface AgentSandbox {
  /** The agent's namespace: its only peer is the sidecar. */
  ns: Namespace;
  fake: FakeUpstream;
  squid: Squid;
  /** A sidecar on the namespace's host end, through the shipped Squid, `base` with `env` on top; closed after the file. */
  sidecarWith(env?: Record<string, string>): Promise<Sidecar>;
}

/**
 * What a real agent CLI runs in: its own network namespace, and the shipped
 * Squid allowing FAKE_HOST and `host`, both resolving to the TLS fake. Registers
 * the enclosing describe's hooks. Needs root.
 */
export function agentSandbox(host: string, base: Record<string, string>): AgentSandbox {
  const sidecars: Sidecar[] = [];
  let egress: ShippedEgress | undefined;
  const sandbox = {
    sidecarWith: async (env: Record<string, string> = {}): Promise<Sidecar> => {
      const s = await startSidecar({ UPSTREAM_URL: `https://${FAKE_HOST}`, HTTPS_PROXY: sandbox.squid.url, REQUIRE_EGRESS_PROXY: 'true', ...base, ...env }, sandbox.ns.hostAddress);
      sidecars.push(s);
      return s;
    },
  } as AgentSandbox;
  beforeAll(async () => {
    sandbox.ns = createAgentNamespace();
    egress = await startShippedEgress({ names: [host], env: { SQUID_ALLOWED_DOMAINS: `${FAKE_HOST},${host}` } });
    sandbox.fake = egress.fake;
    sandbox.squid = egress.squid;
  });
  afterAll(async () => {
    await Promise.all(sidecars.map((s) => s.close()));
    await egress?.close();
    sandbox.ns?.close();
  });
  return sandbox;
}
