import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { UsageSnapshot } from '../../src/usage/ledger.js';
import { usageMarkdown } from '../../src/cli/usage-command.js';
import { startFakeUpstream, type FakeUpstream } from '../../testkit/fake-upstream.js';
import { freePort } from '../../testkit/squid.js';
import { spawnMain, type Spawned } from '../support/process.js';

const KEY = 'sk-proj-CliTestKey0123456789abcdefQRST';
const run = async (args: string[], env: Record<string, string> = {}) => {
  const p = spawnMain(env, args);
  const { code } = await p.exited;
  return { code, stdout: p.stdout(), stderr: p.stderr() };
};

describe('the api-proxy command line', () => {
  it.each([['--help'], ['-h'], ['help']])('%s lists the commands, one line each, and exits 0 with no settings', async (flag) => {
    const r = await run([flag]);
    expect(r.code).toBe(0);
    for (const command of ['api-proxy agent-config', 'api-proxy codex-config', 'api-proxy usage', 'run the sidecar']) expect(r.stdout).toContain(command);
    expect(r.stderr).toBe('');
  });

  it.each([
    [['frob'], "unknown command 'frob'"],
    [['--port', '1'], "unknown option '--port'"],
    [['usage', '--format', 'yaml'], '--format must be markdown or json'],
    [['usage', '--bogus'], "Unknown option '--bogus'"],
  ])('%j exits 64 with a hint', async (args, message) => {
    const r = await run(args);
    expect(r.code).toBe(64);
    expect(r.stderr).toContain(message);
    expect(r.stderr).toMatch(/--help|usage: api-proxy usage/);
  });

  it('usage says so, exit 1, when no sidecar answers', async () => {
    const r = await run(['usage', '--url', `http://127.0.0.1:${await freePort()}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^api-proxy usage: cannot read http:\/\/127\.0\.0\.1:\d+\/usage: /);
  });
});

describe('a running sidecar: the usage summary, and its last line on SIGTERM', () => {
  let fake: FakeUpstream;
  let sidecar: Spawned;
  let port: number;
  let log: string;
  beforeAll(async () => {
    fake = await startFakeUpstream();
    port = await freePort();
    log = join(mkdtempSync(join(tmpdir(), 'api-proxy-cli-')), 'usage.jsonl');
    sidecar = spawnMain({ OPENAI_API_KEY: KEY, UPSTREAM_URL: fake.url, HOST: '127.0.0.1', PORT: String(port), MAX_TOKENS: '1000', USAGE_LOG_FILE: log });
    await sidecar.waitFor('"listening"');
    const res = await fetch(`http://127.0.0.1:${port}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-fake': 'input=120,output=30,cached=100,reasoning=10' }, body: '{"model":"gpt-5.5"}' });
    await res.text();
  });
  afterAll(async () => {
    sidecar.child.kill('SIGKILL');
    await fake.close();
  });

  it('prints a Markdown table for the job summary (the default, PORT as the default URL) and the JSON of /usage', async () => {
    const md = await run(['usage'], { PORT: String(port) });
    expect(md.code, md.stderr).toBe(0);
    expect(md.stdout).toContain('| provider | model | responses | input | cached input | cache write | output | reasoning | total |');
    expect(md.stdout).toContain('| openai | `gpt-5.5` | 1 | 120 | 100 | 0 | 30 | 10 | 150 |');
    expect(md.stdout).toContain('|  | **all** | 1 | 120 | 100 | 0 | 30 | 10 | 150 |');
    expect(md.stdout).toContain('Budget: 150 of 1,000 tokens: within budget.');
    const json = await run(['usage', '--url', `http://127.0.0.1:${port}`, '--format', 'json']);
    expect(json.code).toBe(0);
    const body = JSON.parse(json.stdout) as UsageSnapshot;
    expect(body.tokens).toEqual({ input: 120, cached_input: 100, cache_write: 0, output: 30, reasoning: 10, total: 150 });
    expect(body.budget).toEqual({ maxTokens: 1000, maxRequests: null, usedTokens: 150, usedRequests: 1, exhausted: false });
  });

  it('on SIGTERM, after the drain, logs one usage line with the totals as numbers, the usage log flushed', async () => {
    sidecar.child.kill('SIGTERM');
    expect((await sidecar.exited).code).toBe(0);
    const lines = sidecar.stdout().split('\n').filter((l) => l.includes('"msg":"usage"'));
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ input: 120, cached_input: 100, output: 30, reasoning: 10, total: 150, requests: 1, unknown: 0 });
    const drained = sidecar.stdout().indexOf('drained');
    expect(drained).toBeGreaterThan(-1);
    expect(sidecar.stdout().indexOf('"msg":"usage"')).toBeGreaterThan(drained);
    expect(readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l).total)).toEqual([150]);
  });
});

describe('usageMarkdown', () => {
  const tokens = { input: 1, cached_input: 0, cache_write: 0, output: 1, reasoning: 0, total: 2 };
  const openai = { provider: 'openai', responses: 1, tokens };
  const snapshot = (models: UsageSnapshot['models']): UsageSnapshot => ({
    since: '2026-11-30T00:00:00.000Z',
    requests: 1,
    tokens,
    providers: { openai: { responses: 1, tokens } },
    models,
    unknown: 0,
    budget: { maxTokens: null, maxRequests: 3, usedTokens: 2, usedRequests: 3, exhausted: true },
  });

  it('writes plain model names in code spans, and any other name the agent chose as `other`: no cell, link or HTML gets in', () => {
    const md = usageMarkdown(snapshot({ 'gpt-5.5': openai, 'x|<img src=y>[z](http://e)': openai, '`code`': { ...openai, responses: 2 } }));
    expect(md).toContain('| openai | `gpt-5.5` | 1 | 1 | 0 | 0 | 1 | 0 | 2 |');
    expect(md).toContain('| openai | `other` | 3 | 2 | 0 | 0 | 2 | 0 | 4 |');
    expect(md.split("\n").filter((l) => l.startsWith("| ")).join("\n")).not.toMatch(/[<>[\]()]|img|http/);
    for (const row of md.split('\n').filter((l) => l.includes('| `'))) expect(row.split('|')).toHaveLength(11); // 9 cells
    expect(md).toContain('Budget: 3 of 3 requests: **exhausted**, later calls were refused.');
  });

  it('has a provider column and a cache write column; a provider name it does not know is `other`', () => {
    const cached = { input: 1300, cached_input: 1000, cache_write: 200, output: 50, reasoning: 0, total: 1350 };
    const md = usageMarkdown(
      snapshot({ 'claude-sonnet-4-5': { provider: 'anthropic', responses: 2, tokens: cached }, 'gpt-5.5': openai, 'm': { provider: '<b>x</b>', responses: 1, tokens } }),
    );
    expect(md).toContain('| provider | model | responses | input | cached input | cache write | output | reasoning | total |');
    expect(md).toContain('| anthropic | `claude-sonnet-4-5` | 2 | 1,300 | 1,000 | 200 | 50 | 0 | 1,350 |');
    expect(md).toContain('| other | `m` |');
    expect(md).not.toContain('<b>');
  });

  it('stays under 64 KiB whatever the agent named: a 250 KB name, and thousands of names', () => {
    const models: UsageSnapshot['models'] = { [`gpt-${'a'.repeat(250_000)}`]: openai };
    for (let i = 0; i < 5000; i++) models[`m-${i}-${'b'.repeat(50)}`] = openai;
    const md = usageMarkdown(snapshot(models));
    expect(Buffer.byteLength(md)).toBeLessThan(64 * 1024);
    expect(md.split('\n').filter((l) => l.includes('| `'))).toHaveLength(51); // 50 names, then `other`
    expect(md).toContain('| openai | `other` | 4,951 |');
  });
});
