#!/usr/bin/env bash
# Runs every test from a fresh clone: installs what the tests need (npm
# packages, Squid, iproute2, nginx for the benchmark baseline, shellcheck),
# then lint, typecheck, build, the test suite, the benchmark's quick smoke run,
# and the container tests (scripts/container-test.sh installs Docker).
# The Codex and namespace tests need root; as root (CI) nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

need_apt=()
[ -x /usr/sbin/squid ] || need_apt+=(squid)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v setpriv >/dev/null || need_apt+=(util-linux)
[ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
[ ${#need_apt[@]} -eq 0 ] || as_root bash scripts/apt-install.sh "${need_apt[@]}"

# npm ci when the tree does not match the lock file (a fresh clone has no node_modules).
if ! npm ls --depth=0 >/dev/null 2>&1; then
  npm ci --no-audit --no-fund
fi

status=0
reports=(.cache/vitest.json)
npm test || status=$?
# The benchmark's smoke run: every scenario once, briefly; no thresholds asserted.
if [ $status = 0 ] && [ "${API_PROXY_BENCH:-1}" = 1 ]; then
  node dist/bench/run.js --quick > /dev/null || status=$?
fi
# Images and the compose sandbox: after the rest, alone (API_PROXY_CONTAINERS=0 leaves them out).
if [ "${API_PROXY_CONTAINERS:-1}" = 1 ]; then
  reports+=(.cache/vitest-containers.json)
  bash scripts/container-test.sh || status=$?
fi
# One plain summary line from Vitest's JSON reports.
node dist/scripts/summary.js "${reports[@]}" || status=$?
exit $status
