#!/bin/sh
# Writes Codex's config (pointing at the sidecar, no key), then runs codex.
set -eu
mkdir -p "$CODEX_HOME"
node /opt/api-proxy/codex-config.ts --base-url "$API_PROXY_URL" > "$CODEX_HOME/config.toml"
exec codex "$@"
