#!/usr/bin/env bash
# Runs the compose sandbox once: the agent (Codex) behind the sidecar and Squid,
# stopping everything when the agent exits, with the agent's exit code.
#   OPENAI_API_KEY=sk-... bash scripts/sandbox.sh [compose up options]
#   bash scripts/sandbox.sh --offline      (the fake upstream; no key, no internet)
#   bash scripts/sandbox.sh --prepare-only (write the secrets, start nothing)
# The key goes to secrets/openai_api_key (API_PROXY_SECRETS_DIR): the directory
# is 0700, so no other user of this machine can reach the file; the file is
# 0644, so the sidecar (uid 1000 in its container) can read it where Docker
# bind-mounts it. Squid's password is random unless SQUID_PROXY_PASSWORD is set.
set -euo pipefail
cd "$(dirname "$0")/.."

offline=0 prepare_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --offline) offline=1 ;;
    --prepare-only) prepare_only=1 ;;
    *) break ;;
  esac
  shift
done

files=(-f docker-compose.yml)
if [ "$offline" = 1 ]; then
  files+=(-f docker-compose.offline.yml) # its own throwaway key
else
  secrets=${API_PROXY_SECRETS_DIR:-secrets}
  install -d -m 0700 "$secrets"
  chmod 0700 "$secrets" # install -d leaves an existing directory's mode alone
  key_file=$secrets/openai_api_key
  if [ -n "${OPENAI_API_KEY:-}" ]; then
    printf '%s' "$OPENAI_API_KEY" > "$key_file.new"
    chmod 0644 "$key_file.new"
    mv -f "$key_file.new" "$key_file"
  elif [ -s "$key_file" ]; then
    chmod 0644 "$key_file"
  else
    echo "sandbox: set OPENAI_API_KEY, or put the key in $key_file" >&2
    exit 78
  fi
  export API_PROXY_KEY_FILE=$key_file
fi
unset OPENAI_API_KEY # compose and its containers never need it in the environment
if [ -z "${SQUID_PROXY_PASSWORD:-}" ]; then
  SQUID_PROXY_PASSWORD=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
fi
export SQUID_PROXY_PASSWORD
[ "$prepare_only" = 0 ] || exit 0

bash scripts/engine-check.sh
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
exec "${compose[@]}" "${files[@]}" up --build --exit-code-from agent "$@"
