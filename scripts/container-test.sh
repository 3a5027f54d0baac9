#!/usr/bin/env bash
# The container tests: builds the real Dockerfiles and brings up the compose
# sandbox (test/containers/). Provides what they need on a machine that has
# none of it: Debian's docker.io, docker-compose and debootstrap; a Docker
# engine started by hand when none answers (stopped again, by its PID, at the
# end); and local stand-ins for the base images when no registry is reachable.
# Needs root for the engine. Writes Vitest's JSON report to .cache/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .cache

if [ "$(id -u)" = 0 ]; then
  need_apt=()
  command -v dockerd >/dev/null || need_apt+=(docker.io)
  command -v docker-compose >/dev/null || need_apt+=(docker-compose)
  command -v debootstrap >/dev/null || need_apt+=(debootstrap)
  # The engine is started below, by hand, not by the package.
  [ ${#need_apt[@]} -eq 0 ] || bash scripts/apt-install.sh "${need_apt[@]}"
fi

dockerd_pid=
stop_engine() {
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    # dockerd stops its containers and containerd first; bounded.
    for _ in $(seq 1 30); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$dockerd_pid" 2>/dev/null || true
  fi
}
trap stop_engine EXIT

if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
  dockerd >.cache/dockerd.log 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not answer within 60 s:" >&2; tail -20 .cache/dockerd.log >&2; exit 1; }
fi

if docker info >/dev/null 2>&1; then
  # Said in the log: the DNS isolation of the agent's network holds only on a fixed engine.
  bash scripts/engine-check.sh
  started=$(date +%s)
  bash scripts/container-bases.sh
  echo "base images ready in $(( $(date +%s) - started )) s"
fi

# Without an engine the test says why it cannot run (and fails under API_PROXY_REQUIRE_ALL=1).
rm -f .cache/vitest-containers.json
npx vitest run --config vitest.containers.config.ts --reporter=default --reporter=json --outputFile.json=.cache/vitest-containers.json
