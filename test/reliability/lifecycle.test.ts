import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeUpstream, type FakeUpstream } from '../../testkit/fake-upstream.js';
import { freePort } from '../../testkit/squid.js';
import { spawnMain } from '../support/process.js';
import { until } from '../../testkit/wait.js';

/** The real process under signals while it is busy. */
let fake: FakeUpstream;
beforeAll(async () => {
  fake = await startFakeUpstream();
});
afterAll(() => fake.close());

describe('SIGTERM during 50 live streams', () => {
  it('all finish inside the grace period, new connections are refused, exit 0', async () => {
    const port = await freePort();
    const p = spawnMain({ OPENAI_API_KEY: 'sk-proj-LifeCycleKeyQwErTyUiOp', UPSTREAM_URL: fake.url, HOST: '127.0.0.1', PORT: String(port), SHUTDOWN_GRACE_MS: '15000' });
    await p.waitFor('"listening"');
    const agent = new Agent({ connections: null });
    let started = 0;
    let allStarted = (): void => undefined;
    const running = new Promise<void>((r) => (allStarted = r));
    const streams = Array.from({ length: 50 }, async (_, i) => {
      const res = await request(`http://127.0.0.1:${port}/v1/responses`, {
        method: 'POST',
        dispatcher: agent,
        headers: { 'content-type': 'application/json', 'x-fake': 'events=20,interval=50', 'x-request-id': `s${i}` },
        body: JSON.stringify({ stream: true }),
      });
      let text = '';
      for await (const chunk of res.body) {
        if (text === '' && ++started === 50) allStarted();
        text += chunk.toString();
      }
      return text;
    });
    await running;
    p.child.kill('SIGTERM');
    await p.waitFor('"draining"');
    const refused = await fetch(`http://127.0.0.1:${port}/healthz`).then(() => false, () => true);
    expect(refused).toBe(true);
    const bodies = await Promise.all(streams);
    for (const [i, body] of bodies.entries()) {
      expect(body, `stream ${i}`).toContain('response.completed');
      expect(body).toContain(`"rid":"s${i}"`);
    }
    expect(await p.exited).toEqual({ code: 0, signal: null });
    expect(p.stdout()).toContain('"finished":true');
    await agent.close();
  });
});

describe('SIGHUP key rotation under load', () => {
  it('no request fails, and requests after the reload carry the new key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rotate-'));
    const file = join(dir, 'key');
    const OLD = 'sk-proj-OldRotationKeyAsDfGhJkLzXc';
    const NEW = 'sk-proj-NewRotationKeyMnBvCxZlKjHg';
    writeFileSync(file, OLD);
    const port = await freePort();
    const p = spawnMain({ OPENAI_API_KEY_FILE: file, UPSTREAM_URL: fake.url, HOST: '127.0.0.1', PORT: String(port) });
    await p.waitFor('"listening"');
    fake.received.length = 0;

    let stop = false;
    let failures = 0;
    const workers = Array.from({ length: 4 }, async () => {
      while (!stop) {
        const res = await fetch(`http://127.0.0.1:${port}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }).catch(() => null);
        if (res?.status !== 200) failures++;
        await res?.text();
      }
    });
    await until(() => fake.received.length, (n) => n >= 50);
    writeFileSync(file, NEW);
    p.child.kill('SIGHUP');
    await p.waitFor('"key reloaded"');
    const reloadedAt = fake.received.length;
    await until(() => fake.received.length, (n) => n >= reloadedAt + 50);
    stop = true;
    await Promise.all(workers);

    expect(failures).toBe(0);
    const keys = fake.received.map((r) => r.headers.authorization);
    expect(new Set(keys)).toEqual(new Set([`Bearer ${OLD}`, `Bearer ${NEW}`]));
    // Requests in flight at the reload may still carry the old key; every one sent after it carries the new.
    expect(keys.slice(reloadedAt + 8).every((k) => k === `Bearer ${NEW}`)).toBe(true);
    p.child.kill('SIGTERM');
    await p.exited;
  });
});

describe('SIGHUP with two providers, each key from its file', () => {
  it('rotates both; a bad new key keeps the old one and the log names its setting, never a key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rotate-'));
    const openaiFile = join(dir, 'openai');
    const anthropicFile = join(dir, 'anthropic');
    const keys = { openai: ['sk-proj-FirstOpenaiKeyQwErTyUiOp', 'sk-proj-SecondOpenaiKeyAsDfGhJkL'], anthropic: ['sk-ant-api03-FirstAnthKeyZxCvBnMq', 'sk-ant-api03-SecondAnthKeyPoIuYtRe'] };
    writeFileSync(openaiFile, keys.openai[0]!);
    writeFileSync(anthropicFile, keys.anthropic[0]!);
    const [port, anthropicPort] = [await freePort(), await freePort()];
    const p = spawnMain({
      OPENAI_API_KEY_FILE: openaiFile,
      ANTHROPIC_API_KEY_FILE: anthropicFile,
      UPSTREAM_URL: fake.url,
      ANTHROPIC_UPSTREAM_URL: fake.url,
      HOST: '127.0.0.1',
      PORT: String(port),
      ANTHROPIC_PORT: String(anthropicPort),
    });
    await p.waitFor('"provider":"anthropic"');
    const sent = async (): Promise<{ openai: unknown; anthropic: unknown }> => {
      await (await fetch(`http://127.0.0.1:${port}/v1/models`)).text();
      const openai = fake.received.at(-1)!.headers.authorization;
      await (await fetch(`http://127.0.0.1:${anthropicPort}/v1/models`)).text();
      return { openai, anthropic: fake.received.at(-1)!.headers['x-api-key'] };
    };
    expect(await sent()).toEqual({ openai: `Bearer ${keys.openai[0]}`, anthropic: keys.anthropic[0] });

    writeFileSync(openaiFile, keys.openai[1]!);
    writeFileSync(anthropicFile, keys.anthropic[1]!);
    p.child.kill('SIGHUP');
    await until(sent, (k) => k.openai === `Bearer ${keys.openai[1]}` && k.anthropic === keys.anthropic[1]);

    writeFileSync(anthropicFile, 'sk-placeholder');
    p.child.kill('SIGHUP');
    await p.waitFor('ANTHROPIC_API_KEY_FILE is a placeholder');
    expect(await sent()).toEqual({ openai: `Bearer ${keys.openai[1]}`, anthropic: keys.anthropic[1] });
    p.child.kill('SIGTERM');
    await p.exited;
    for (const key of [...keys.openai, ...keys.anthropic]) expect(p.stdout() + p.stderr()).not.toContain(key);
  });
});
