import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeUpstream, type FakeUpstream } from '../../testkit/fake-upstream.js';
import { freePort } from '../../testkit/squid.js';
import { memoryMiB, until } from '../../testkit/wait.js';
import { spawnMain, type Spawned } from '../support/process.js';

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

  /** A raw WebSocket through the sidecar, past its 101: the socket and what it has received since. */
  async function upgraded(): Promise<{ socket: Socket; received: () => Buffer }> {
    const socket = connect(port, '127.0.0.1');
    let data = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => (data = Buffer.concat([data, d])));
    socket.on('error', () => undefined); // the sidecar ends the socket while this side may still send
    await new Promise((r) => socket.once('connect', r));
    socket.write(`GET /v1/responses HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n\r\n`);
    await until(() => data.includes('\r\n\r\n'), (v) => v, 10_000);
    expect(data.toString('latin1')).toMatch(/^HTTP\/1\.1 101 /);
    const headEnd = data.indexOf('\r\n\r\n') + 4;
    return { socket, received: () => data.subarray(headEnd) };
  }

  it('is closed with 1009 as soon as its header is read, before any of its payload', async () => {
    const { socket, received } = await upgraded();
    socket.write(hugeFrameHeader());
    // A close frame from the server: 0x88, its length, then the code 1009 (0x03f1).
    const frames = await until(received, (b) => b.length >= 4 && b[0] === 0x88, 10_000);
    expect(frames[0]).toBe(0x88);
    expect(frames.readUInt16BE(2)).toBe(1009);
    socket.destroy();
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
