import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeUpstream, type FakeUpstream } from '../../testkit/fake-upstream.js';
import { freePort } from '../../testkit/squid.js';
import { memoryMiB } from '../../testkit/wait.js';
import { spawnMain, type Spawned } from '../support/process.js';

/**
 * The sidecar's peak resident memory (VmHWM, read from /proc for the sidecar
 * as a child process) under one hostile body, while ALLOWED_MODELS makes it
 * read every model call: the contract's bound is 200 MiB.
 */
const KEY = 'sk-proj-MemoryBoundTestKey0123456789abcdefXYZ';
const BOUND_MIB = 200;
const MAX_BODY = 64 * 1024 * 1024;

describe('memory under one request, ALLOWED_MODELS set', () => {
  let fake: FakeUpstream;
  let sidecar: Spawned;
  let url: string;
  beforeAll(async () => {
    fake = await startFakeUpstream();
    const port = await freePort();
    url = `http://127.0.0.1:${port}/v1/responses`;
    sidecar = spawnMain({ OPENAI_API_KEY: KEY, UPSTREAM_URL: fake.url, HOST: '127.0.0.1', PORT: String(port), ALLOWED_MODELS: 'gpt-5*', MAX_BODY_BYTES: String(MAX_BODY) });
    await sidecar.waitFor('"listening"');
  });
  afterAll(async () => {
    sidecar.child.kill('SIGKILL');
    await fake.close();
  });
  const peakMiB = (): number => memoryMiB(sidecar.child.pid!, 'VmHWM');
  const post = async (headers: Record<string, string>, body: Buffer) => {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: new Uint8Array(body) });
    const text = await res.text();
    return { status: res.status, code: (JSON.parse(text || '{}') as { error?: { code?: string } }).error?.code };
  };
  /** A JSON body of `bytes` whose `input` is one long string. */
  const big = (bytes: number, model = 'gpt-5.5'): Buffer => {
    const head = `{"model":"${model}","input":"`;
    return Buffer.concat([Buffer.from(head), Buffer.alloc(bytes - head.length - 2, 0x61), Buffer.from('"}')]);
  };

  it('a small gzip body that inflates to MAX_BODY_BYTES is read as it inflates, its model checked', async () => {
    const bomb = gzipSync(big(MAX_BODY));
    expect(bomb.length).toBeLessThan(256 * 1024);
    const checked = await post({ 'content-encoding': 'gzip' }, bomb);
    expect(checked.code).not.toBe('model_not_allowed'); // allowed: sent on as it came (the fake does not gunzip)
    const offList = await post({ 'content-encoding': 'gzip' }, gzipSync(big(MAX_BODY, 'o3-pro')));
    expect(offList).toEqual({ status: 403, code: 'model_not_allowed' });
    const past = await post({ 'content-encoding': 'gzip' }, gzipSync(big(MAX_BODY + 1024)));
    expect(past).toEqual({ status: 403, code: 'model_not_allowed' });
    console.log(`gzip bombs: sidecar VmHWM ${peakMiB().toFixed(1)} MiB`);
    expect(peakMiB()).toBeLessThan(BOUND_MIB);
  });

  it('a body of MAX_BODY_BYTES sent as it is', async () => {
    const res = await post({}, big(MAX_BODY - 16));
    expect(res.code).not.toBe('model_not_allowed');
    console.log(`plain body of ${MAX_BODY - 16} bytes: sidecar VmHWM ${peakMiB().toFixed(1)} MiB`);
    expect(peakMiB()).toBeLessThan(BOUND_MIB);
  });
});
