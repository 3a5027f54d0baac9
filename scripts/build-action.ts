// Bundles the GitHub Action (action/main.ts, action/post.ts) into action/dist/,
// which is committed: a runner installs no dependencies. One definition, used by
// `npm run build:action` and by the test that fails when the committed bundle is stale.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

// The repository, from this file as source (scripts/) or built (dist/scripts/).
const ROOT = ['..', '../..'].map((rel) => fileURLToPath(new URL(rel, import.meta.url))).find((dir) => existsSync(join(dir, 'action.yml')))!;

export async function buildAction(outdir: string): Promise<void> {
  rmSync(outdir, { recursive: true, force: true });
  await build({
    absWorkingDir: ROOT,
    entryPoints: ['action/main.ts', 'action/post.ts'],
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    outdir,
    outExtension: { '.js': '.mjs' },
    // main and post share @actions/core: one chunk, not two copies.
    splitting: true,
    chunkNames: 'shared-[hash]',
    // Some of @actions/core's dependencies require() Node's builtins.
    banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
    legalComments: 'none',
    logLevel: 'warning',
  });
}

if (import.meta.url === `file://${process.argv[1]}`) await buildAction('action/dist');
