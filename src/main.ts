#!/usr/bin/env node
// `api-proxy` runs the sidecar; `api-proxy codex-config ...` prints Codex's config.
// The subcommand loads nothing of the sidecar, so it needs no settings.
if (process.argv[2] === 'codex-config') {
  const { codexConfigCommand } = await import('./codex-config.js');
  process.exitCode = codexConfigCommand(process.argv.slice(3), process.stdout, process.stderr);
} else {
  await import('./serve.js');
}
