import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { buildAction } from '../scripts/build-action.js';

/** The GitHub Action's metadata and its committed bundle (test/containers/action.test.ts runs it). */
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const read = (p: string): string => readFileSync(join(ROOT, p), 'utf8');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Doc = Record<string, any>;
const action = parse(read('action.yml')) as Doc;

describe('action.yml', () => {
  it('follows GitHub\'s metadata syntax for a JavaScript action with a post step', () => {
    // https://docs.github.com/actions/reference/metadata-syntax-for-github-actions
    expect(Object.keys(action).every((k) => ['name', 'author', 'description', 'inputs', 'outputs', 'runs', 'branding'].includes(k))).toBe(true);
    for (const k of ['name', 'description', 'runs']) expect(action[k], k).toBeTruthy();
    expect(['node20', 'node24']).toContain(action.runs.using);
    expect(Object.keys(action.runs).every((k) => ['using', 'main', 'pre', 'pre-if', 'post', 'post-if'].includes(k))).toBe(true);
    for (const entry of [action.runs.main, action.runs.post]) expect(existsSync(join(ROOT, entry)), entry).toBe(true);
    expect(action.runs['post-if']).toBeUndefined(); // the default, always(): post runs when the job failed too
    for (const [name, input] of Object.entries(action.inputs as Record<string, Doc>)) {
      expect(Object.keys(input).every((k) => ['description', 'required', 'default', 'deprecationMessage'].includes(k)), name).toBe(true);
      expect(typeof input.description, name).toBe('string');
    }
    for (const [name, output] of Object.entries(action.outputs as Record<string, Doc>)) {
      expect(Object.keys(output), name).toEqual(['description']);
    }
    expect(['white', 'black', 'yellow', 'blue', 'green', 'orange', 'red', 'purple', 'gray-dark']).toContain(action.branding.color);
  });

  it('declares exactly the inputs and outputs the code reads and sets', () => {
    const code = readdirSync(join(ROOT, 'action')).filter((f) => f.endsWith('.ts')).map((f) => read(`action/${f}`)).join('\n');
    const used = (re: RegExp): string[] => [...new Set([...code.matchAll(re)].map((m) => m[1]!))].sort();
    expect(used(/core\.getInput\('([^']+)'/g)).toEqual(Object.keys(action.inputs).sort());
    expect(used(/core\.setOutput\('([^']+)'/g)).toEqual(Object.keys(action.outputs).sort());
    expect(action.inputs['openai-api-key'].required).toBe(true);
    expect(action.inputs['allowed-domains'].default).toBe('api.openai.com');
  });
});

describe('the committed bundle', () => {
  it('is what the source builds to (runners install no dependencies, so the bundle is what runs)', async () => {
    const out = mkdtempSync(join(tmpdir(), 'api-proxy-action-build-'));
    await buildAction(out);
    const files = readdirSync(out).sort();
    expect(readdirSync(join(ROOT, 'action/dist')).sort(), 'action/dist is stale: run npm run build:action').toEqual(files);
    for (const f of files) {
      expect(readFileSync(join(out, f), 'utf8') === read(`action/dist/${f}`), `action/dist/${f} is stale: run npm run build:action`).toBe(true);
    }
  });
});
