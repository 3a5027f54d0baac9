import { mkdirSync, mkdtempSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeUpstream, type FakeUpstream } from '../testkit/fake-upstream.js';
import { freePort } from '../testkit/squid.js';
import { timedRequest } from './support/net.js';
import { spawnMain } from './support/process.js';
import { until } from '../testkit/wait.js';

const KEY = 'sk-proj-MainTestKey0123456789abcdefWXYZ';
let fake: FakeUpstream;
beforeAll(async () => {
  fake = await startFakeUpstream();
});
afterAll(() => fake.close());

const refused = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = connect({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });

describe('fail fast on bad configuration', () => {
  const dir = mkdtempSync(join(tmpdir(), 'main-'));
  const emptyFile = join(dir, 'empty');
  writeFileSync(emptyFile, '\n');
  it.each([
    ['no key', {}, 'OPENAI_API_KEY: is missing'],
    ['an empty key', { OPENAI_API_KEY: '' }, 'OPENAI_API_KEY: is empty'],
    ['a placeholder', { OPENAI_API_KEY: 'sk-placeholder-abc123' }, 'OPENAI_API_KEY: is a placeholder'],
    ['a key with a space', { OPENAI_API_KEY: 'sk-proj-abc def123' }, 'OPENAI_API_KEY: contains whitespace'],
    ['an empty key file', { OPENAI_API_KEY_FILE: emptyFile }, 'OPENAI_API_KEY_FILE:'],
    ['a required egress proxy missing', { OPENAI_API_KEY: KEY, REQUIRE_EGRESS_PROXY: 'true' }, 'REQUIRE_EGRESS_PROXY:'],
    ['a bad port', { OPENAI_API_KEY: KEY, PORT: 'ten' }, 'PORT:'],
    ['a token budget that is no number', { OPENAI_API_KEY: KEY, MAX_TOKENS: 'abc' }, 'MAX_TOKENS: must be a positive whole number'],
    ['a request budget of 0', { OPENAI_API_KEY: KEY, MAX_REQUESTS: '0' }, 'MAX_REQUESTS: must be a positive whole number'],
    ['a usage log it cannot write', { OPENAI_API_KEY: KEY, USAGE_LOG_FILE: join(dir, 'no', 'such', 'dir.jsonl') }, 'USAGE_LOG_FILE:'],
  ])('%s: one line on stderr, exit 78, nothing bound', async (_name, env, reason) => {
    const port = await freePort();
    const p = spawnMain({ HOST: '127.0.0.1', PORT: String(port), ...env } as Record<string, string>);
    const { code } = await p.exited;
    expect(code).toBe(78);
    const lines = p.stderr().split('\n').filter(Boolean);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(reason);
    expect(p.stdout()).toBe('');
    for (const secret of ['abc123', 'abc def123', KEY]) expect(p.stderr()).not.toContain(secret);
    expect(await refused(port)).toBe(true);
  });
});

describe('signals', () => {
  it('SIGTERM lets a live stream finish, refuses new connections, and exits 0', async () => {
    const port = await freePort();
    const p = spawnMain({ OPENAI_API_KEY: KEY, UPSTREAM_URL: fake.url, HOST: '127.0.0.1', PORT: String(port), SHUTDOWN_GRACE_MS: '10000' });
    await p.waitFor('"listening"');
    const stream = timedRequest(`http://127.0.0.1:${port}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-fake': 'events=8,interval=100' },
      body: JSON.stringify({ stream: true }),
    });
    await new Promise<void>((resolve) => fake.once('request', () => resolve()));
    p.child.kill('SIGTERM');
    await p.waitFor('"draining"');
    expect(await refused(port)).toBe(true);
    const res = await stream;
    expect(res.status).toBe(200);
    expect(res.body).toContain('response.completed');
    expect(await p.exited).toEqual({ code: 0, signal: null });
    expect(p.stdout()).toContain('"finished":true');
  });

  it('SIGTERM cuts what is still open when the grace period ends, and exits 0', async () => {
    const port = await freePort();
    const p = spawnMain({ OPENAI_API_KEY: KEY, UPSTREAM_URL: fake.url, HOST: '127.0.0.1', PORT: String(port), SHUTDOWN_GRACE_MS: '300' });
    await p.waitFor('"listening"');
    const stream = timedRequest(`http://127.0.0.1:${port}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-fake': 'events=100,interval=100' },
      body: JSON.stringify({ stream: true }),
    }).catch((err: Error) => err);
    await new Promise<void>((resolve) => fake.once('request', () => resolve()));
    p.child.kill('SIGTERM');
    expect(await p.exited).toEqual({ code: 0, signal: null });
    expect(p.stdout()).toContain('"finished":false');
    const res = await stream;
    expect(res instanceof Error || !res.body.includes('response.completed')).toBe(true);
  });
});

describe('key file rotation', () => {
  it('follows a Kubernetes-style symlink swap, keeps the old key on a bad one, and re-reads on SIGHUP', async () => {
    // kubelet layout: key -> ..data/key, ..data -> ..<timestamp>/, swapped by renaming ..data.
    const dir = mkdtempSync(join(tmpdir(), 'secret-'));
    const version = (name: string, key: string): void => {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, 'key'), `${key}\n`);
      symlinkSync(name, join(dir, '..data_tmp'));
      renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    };
    version('..v1', KEY);
    symlinkSync('..data/key', join(dir, 'key'));

    const port = await freePort();
    const p = spawnMain({ OPENAI_API_KEY_FILE: join(dir, 'key'), UPSTREAM_URL: fake.url, HOST: '127.0.0.1', PORT: String(port) });
    await p.waitFor('"listening"');
    const sentKey = async (): Promise<string | undefined> => {
      fake.received.length = 0;
      await fetch(`http://127.0.0.1:${port}/v1/models`);
      return fake.received[0]?.headers.authorization;
    };
    expect(await sentKey()).toBe(`Bearer ${KEY}`);

    const NEW = 'sk-proj-RotatedKey9876543210zyxwvuQRST';
    version('..v2', NEW);
    await p.waitFor('"key reloaded"');
    expect(await sentKey()).toBe(`Bearer ${NEW}`);

    version('..v3', 'sk-placeholder');
    await p.waitFor('new key rejected');
    expect(await sentKey()).toBe(`Bearer ${NEW}`);
    const rejections = (): number => p.stdout().split('\n').filter((l) => l.includes('new key rejected')).length;
    const before = rejections();
    p.child.kill('SIGHUP');
    expect(await until(rejections, (n) => n > before)).toBeGreaterThan(before);
    expect(await sentKey()).toBe(`Bearer ${NEW}`);

    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toMatch(/api_proxy_key_reloads_total\{result="success"\} 1/);
    expect(metrics).toMatch(/api_proxy_key_reloads_total\{result="rejected"\} [2-9]/);
    p.child.kill('SIGTERM');
    await p.exited;
    for (const secret of [KEY, NEW]) expect(p.stdout() + p.stderr()).not.toContain(secret);
  });
});
