import { startFakeUpstream, type FakeUpstream } from '../../testkit/fake-upstream.js';
import { FAKE_HOST } from '../../testkit/test-ca.js';
import { testPki } from './sidecar.js';

/**
 * The product's Squid tunnels to port 443 only, so a fake upstream behind it must
 * listen on 443: on a loopback address of this process's own (all of 127/8 is
 * loopback) so parallel test files do not collide. Binding 443 needs root.
 */
export const UPSTREAM_ADDRESS = `127.43.${Math.floor(process.pid / 250) % 250}.${(process.pid % 250) + 1}`;

/** Why the fake cannot take port 443 here, or null when it can. */
export const port443Unavailable = (): string | null => (process.getuid?.() === 0 ? null : 'binding port 443 needs root');

export function startFakeOn443(): Promise<FakeUpstream> {
  return startFakeUpstream({ pki: testPki(), listenHost: UPSTREAM_ADDRESS, port: 443, hostname: FAKE_HOST, keepAliveTimeoutMs: 60_000 });
}
