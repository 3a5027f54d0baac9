import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeUpstream, type FakeUpstream } from '../../testkit/fake-upstream.js';
import { freePort } from '../../testkit/squid.js';
import { memoryMiB } from '../../testkit/wait.js';
import { spawnMain, type Spawned } from '../support/process.js';
import { closeCode, rawUpgrade, type RawWebSocket } from '../support/ws.js';

/**
 * A caller frame declaring 2^40 bytes on the Responses WebSocket: closed with
 * 1009 at its header, guarded or not, and never buffered (the sidecar as a
 * child process, its resident memory read from /proc before and after).
 */
const KEY = 'sk-proj-FrameBoundTestKey0123456789abcdefXYZ';

/** FIN + text, masked, a 64-bit length of 2^40, a mask: a frame header and nothing of its payload. */
function hugeFrameHeader(): Buffer {
  const header = Buffer.alloc(14);
  header[0] = 0x81;
  header[1] = 0x80 | 127;
  header.writeBigUInt64BE(2n ** 40n, 2);
  randomBytes(4).copy(header, 10);
  return header;
}

describe('a WebSocket frame declared past MAX_BODY_BYTES', () => {
  let fake: FakeUpstream;
  let sidecar: Spawned;
  let port: number;
  beforeAll(async () => {
    fake = await startFakeUpstream();
    port = await freePort();
    sidecar = spawnMain({ OPENAI_API_KEY: KEY, UPSTREAM_URL: fake.url, HOST: '127.0.0.1', PORT: String(port), MAX_BODY_BYTES: String(1024 * 1024) });
    await sidecar.waitFor('"listening"');
  });
  afterAll(async () => {
    sidecar.child.kill('SIGKILL');
    await fake.close();
  });
  const rssMiB = (): number => memoryMiB(sidecar.child.pid!, 'VmRSS');

  const upgraded = (): Promise<RawWebSocket> => rawUpgrade(port);

  it('is closed with 1009 as soon as its header is read, before any of its payload', async () => {
    const ws = await upgraded();
    ws.socket.write(hugeFrameHeader());
    expect(await closeCode(ws)).toBe(1009);
    ws.socket.destroy();
  });

  it('its payload is dropped as it comes, never held: 32 MiB sent, the resident memory does not grow by it', async () => {
    const { socket } = await upgraded();
    const before = rssMiB();
    socket.write(hugeFrameHeader());
    const block = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < 32 && !socket.destroyed; i++) {
      if (!socket.write(block)) await new Promise((r) => socket.once('drain', r).once('close', r));
    }
    socket.destroy();
    expect(rssMiB() - before, 'the frame was buffered').toBeLessThan(16);
  });
});
