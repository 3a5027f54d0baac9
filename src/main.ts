#!/usr/bin/env node
// The `api-proxy` command. With no command it runs the sidecar; the other
// commands load nothing of it, so they need no settings.
const EX_USAGE = 64;

const HELP = `api-proxy: holds the model API keys for an agent and sends its calls out through an egress proxy.

Commands:
  api-proxy                 run the sidecar (settings come from the environment: see the README)
  api-proxy agent-config    print an agent's settings that send every call to the sidecar (claude, codex)
  api-proxy codex-config    print the Codex config.toml that sends every call to the sidecar
  api-proxy usage           print what a running sidecar has spent (Markdown for $GITHUB_STEP_SUMMARY, or JSON)
  api-proxy help            this text

Run a command with --help for its options.
`;

const [command, ...args] = process.argv.slice(2);
switch (command) {
  case undefined:
    await import('./serve.js');
    break;
  case 'codex-config': {
    const { codexConfigCommand } = await import('./cli/codex-config.js');
    process.exitCode = codexConfigCommand(args, process.stdout, process.stderr);
    break;
  }
  case 'agent-config': {
    const { agentConfigCommand } = await import('./cli/agent-config.js');
    process.exitCode = agentConfigCommand(args, process.stdout, process.stderr);
    break;
  }
  case 'usage': {
    const { usageCommand } = await import('./cli/usage-command.js');
    process.exitCode = await usageCommand(args, process.env, process.stdout, process.stderr);
    break;
  }
  case 'help':
  case '--help':
  case '-h':
    process.stdout.write(HELP);
    break;
  default:
    process.stderr.write(`api-proxy: unknown ${command.startsWith('-') ? 'option' : 'command'} '${command}' (run 'api-proxy --help' for the commands)\n`);
    process.exitCode = EX_USAGE;
}
