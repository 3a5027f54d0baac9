import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeUpstream, type FakeUpstream } from '../../testkit/fake-upstream.js';
import { SQUID_BIN, startSquid } from '../../testkit/squid.js';
import { createTestPki } from '../../testkit/test-ca.js';
import { startSidecar, testPki, type Sidecar } from '../support/sidecar.js';
import { openFds, until } from '../../testkit/wait.js';

if (!SQUID_BIN) throw new Error('squid is not installed: run scripts/test.sh, or apt-get install squid');

/** What the caller sees when the world breaks, and that nothing is left behind. */
let fake: FakeUpstream;
let sidecar: Sidecar;
beforeAll(async () => {
  fake = await startFakeUpstream();
  sidecar = await startSidecar({ UPSTREAM_URL: fake.url });
});
afterAll(async () => {
  await sidecar.close();
  await fake.close();
});

/** Reads a response to its end or its error; `complete` says which. */
function readAll(url: string, init: { method?: string; headers?: Record<string, string>; body?: string }): Promise<{ status: number; body: string; complete: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: init.method ?? 'GET', headers: init.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, body, complete: res.complete }));
      res.on('error', () => resolve({ status: res.statusCode!, body, complete: false }));
      res.on('aborted', () => resolve({ status: res.statusCode!, body, complete: false }));
    });
    req.on('error', reject);
    req.end(init.body);
  });
}

const sse = { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ stream: true }) };

describe('a broken upstream', () => {
  it('a reset mid-stream ends the caller’s stream visibly incomplete, and the next request works', async () => {
    const res = await readAll(`${sidecar.url}/v1/responses`, { ...sse, headers: { ...sse.headers, 'x-fake': 'events=20,interval=10,reset=4' } });
    expect(res.status).toBe(200);
    expect(res.complete).toBe(false);
    expect(res.body).not.toContain('response.completed');
    expect((await request(sidecar.url).get('/v1/models')).status).toBe(200);
    const metrics = await (await fetch(`${sidecar.url}/metrics`)).text();
    expect(metrics).toMatch(/api_proxy_upstream_errors_total\{code="upstream_unreachable"\} [1-9]/);
  });

  it('an untrusted certificate is upstream_unreachable, not a silent downgrade', async () => {
    const rogue = await startFakeUpstream({ pki: await createTestPki(mkdtempSync(join(tmpdir(), 'rogue-ca-'))), hostname: 'localhost' });
    const side = await startSidecar({ UPSTREAM_URL: rogue.url });
    try {
      const res = await request(side.url).get('/v1/models');
      expect(res.status).toBe(502);
      expect(res.body.error.code).toBe('upstream_unreachable');
      expect(rogue.received).toHaveLength(0);
      expect(side.logs.join('')).toMatch(/certificate/i);
    } finally {
      await side.close();
      await rogue.close();
    }
  });

  it('huge upstream response headers are refused as upstream_unreachable', async () => {
    const res = await request(sidecar.url).get('/v1/models').set('x-fake', 'bigheader=200000');
    expect(res.status).toBe(502);
    expect(res.body.error.code).toBe('upstream_unreachable');
  });

  it('a trusted upstream still works (control for the two above)', async () => {
    const good = await startFakeUpstream({ pki: testPki(), hostname: 'localhost' });
    const side = await startSidecar({ UPSTREAM_URL: good.url });
    try {
      expect((await request(side.url).get('/v1/models')).status).toBe(200);
    } finally {
      await side.close();
      await good.close();
    }
  });
});

describe('Squid dies mid-stream', () => {
  it('the open stream ends with an error the caller sees, and later requests recover without a restart', async () => {
    const tls = await startFakeUpstream({ pki: testPki() });
    const squid = await startSquid({ allow: ['.openai.test'], hosts: { 'api.openai.test': '127.0.0.1' } });
    const side = await startSidecar({ UPSTREAM_URL: tls.url, HTTPS_PROXY: squid.url });
    try {
      const streaming = readAll(`${side.url}/v1/responses`, { ...sse, headers: { ...sse.headers, 'x-fake': 'events=3,hold' } });
      await once(tls, 'request');
      await squid.restart();
      tls.release();
      const res = await streaming;
      expect(res.complete).toBe(false);
      expect(res.body).not.toContain('response.completed');
      expect((await request(side.url).get('/v1/models')).status).toBe(200);
    } finally {
      await side.close();
      await squid.stop();
      await tls.close();
    }
  });
});

describe('callers that leave', () => {
  const baseline = async (): Promise<number> => {
    // One request first, so the pool's idle connection is part of the baseline.
    await request(sidecar.url).get('/v1/models');
    return openFds();
  };

  it('mid-upload: the upstream request is aborted and no descriptor is left', async () => {
    const before = await baseline();
    const aborted = once(fake, 'request-aborted');
    const req = httpRequest(`${sidecar.url}/v1/files`, { method: 'POST', headers: { 'transfer-encoding': 'chunked' } });
    req.on('error', () => undefined);
    req.write(Buffer.alloc(64 * 1024));
    await new Promise((r) => setTimeout(r, 50)); // let the first chunk travel; the abort is what is tested
    req.destroy();
    await aborted;
    expect(await until(() => openFds(), (n) => n <= before)).toBeLessThanOrEqual(before);
  });

  it('mid-stream: the upstream stream is closed and no descriptor is left', async () => {
    const before = await baseline();
    const cancelled = once(fake, 'stream-cancelled');
    await new Promise<void>((resolve) => {
      const req = httpRequest(`${sidecar.url}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-fake': 'events=500,interval=20' } }, (res) =>
        res.once('data', () => {
          req.destroy();
          resolve();
        }),
      );
      req.on('error', () => undefined);
      req.end(JSON.stringify({ stream: true }));
    });
    await cancelled;
    expect(await until(() => openFds(), (n) => n <= before)).toBeLessThanOrEqual(before);
  });
});
