#!/usr/bin/env bash
# Runs every test from a fresh clone: installs what the tests need (npm
# packages, Squid, iproute2, nginx and wrk for the benchmark, shellcheck),
# then lint, typecheck, build, the test suite, the benchmark's and the soak's
# smoke runs, and the container tests (scripts/container-test.sh installs Docker).
# The Codex and namespace tests need root; as root (CI) nothing is skipped.
# Each phase prints its start and its seconds, and runs under a bound
# (scripts/lib/bound.sh); what an earlier run left running is stopped first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bound.sh
mkdir -p .cache
rm -f .cache/phases

# shellcheck disable=SC2317 # called through phase
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

phase "leftovers of earlier runs" bash scripts/leftovers.sh

need_apt=()
[ -x /usr/sbin/squid ] || need_apt+=(squid)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v setpriv >/dev/null || need_apt+=(util-linux)
[ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
[ ${#need_apt[@]} -eq 0 ] || phase "installs (Debian)" as_root bash scripts/apt-install.sh "${need_apt[@]}"

# npm ci when the tree does not match the lock file (a fresh clone has no node_modules).
if ! npm ls --depth=0 >/dev/null 2>&1; then
  phase "npm ci" bounded npm_ci 900 "npm ci" "the npm registry (npm config get registry) and ~/.npm/_logs" -- npm ci --no-audit --no-fund
fi

status=0
reports=(.cache/vitest.json)
rm -f .cache/vitest.json
phase lint bounded lint 600 "eslint" "the output above" -- npm run lint || status=$?
phase typecheck bounded typecheck 600 "tsc --noEmit" "the output above" -- npm run typecheck || status=$?
phase build bounded build 600 "tsc (build)" "the output above" -- npm run build || status=$?
if [ $status = 0 ]; then
  phase "unit and end-to-end tests" bounded tests 2400 "the test suite" "the last test files named above" -- npm run test:run || status=$?
fi
# The benchmark's smoke run: every scenario once, briefly; no thresholds asserted.
if [ $status = 0 ] && [ "${API_PROXY_BENCH:-1}" = 1 ]; then
  phase "bench smoke" bounded bench 900 "the benchmark's smoke run" "the scenario named last above" -- node dist/bench/run.js --quick > /dev/null || status=$?
  # The soak, briefly: mixed traffic with every control on, every exchange must succeed (too short to judge the slope).
  phase "soak smoke" bounded soak 300 "the soak's smoke run" "the soak lines above" -- node dist/scripts/soak.js --seconds 30 || status=$?
fi
# Images and the compose sandbox: after the rest, alone (API_PROXY_CONTAINERS=0 leaves them out).
if [ "${API_PROXY_CONTAINERS:-1}" = 1 ]; then
  reports+=(.cache/vitest-containers.json)
  bash scripts/container-test.sh || status=$?
fi
phase_summary
# One plain summary line from Vitest's JSON reports.
node dist/scripts/summary.js "${reports[@]}" || status=$?
exit $status
