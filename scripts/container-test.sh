#!/usr/bin/env bash
# The container tests: builds the real Dockerfiles and brings up the compose
# sandbox (test/containers/). Provides what they need on a machine that has
# none of it: Debian's docker.io, docker-compose and debootstrap; a Docker
# engine started by hand when none answers (stopped again, by its PID, at the
# end, or by the next run's leftovers.sh when this one is killed); and local
# stand-ins for the base images when no registry is reachable.
# Needs root for the engine. Writes Vitest's JSON report to .cache/.
# Every wait is bounded (scripts/lib/bound.sh); the engine's log is .cache/dockerd.log.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .cache
. scripts/lib/bound.sh
. scripts/lib/pids.sh
log=.cache/dockerd.log

bash scripts/leftovers.sh

if [ "$(id -u)" = 0 ]; then
  need_apt=()
  command -v dockerd >/dev/null || need_apt+=(docker.io)
  command -v docker-compose >/dev/null || need_apt+=(docker-compose)
  command -v debootstrap >/dev/null || need_apt+=(debootstrap)
  # The engine is started below, by hand, not by the package.
  [ ${#need_apt[@]} -eq 0 ] || phase "installs (Docker)" bash scripts/apt-install.sh "${need_apt[@]}"
fi

dockerd_pid=
dockerd_start=
stop_engine() {
  [ -n "$dockerd_pid" ] || return 0
  # dockerd stops its containers and containerd first; bounded.
  pid_stop "$dockerd_pid" "$dockerd_start" ||
    echo "container-test: the engine did not stop within ${API_PROXY_BOUND_leftover_stop:-30} s; killed" >&2
  pid_forget dockerd
}
trap stop_engine EXIT

# 0: an engine answers; 124: one accepts and never answers; other: none.
engine_answers() {
  bounded docker_info "${1:-20}" "docker info" "the engine behind /var/run/docker.sock (its log: $log when these scripts started it)" -- \
    docker info >/dev/null 2>&1
}

start_engine() {
  local rc=0
  engine_answers || rc=$?
  if [ $rc = 124 ]; then
    # A half-started or half-stopped engine: a second one would fail on its pid file or hang the same way.
    echo "container-test: an engine holds /var/run/docker.sock and does not answer (its pid file says $(cat /var/run/docker.pid 2>/dev/null || echo nothing)); not started by these scripts, so left alone: stop it and run again" >&2
    return 1
  fi
  [ $rc != 0 ] || return 0
  if [ "$(id -u)" != 0 ] || ! command -v dockerd >/dev/null; then return 0; fi
  dockerd >"$log" 2>&1 &
  dockerd_pid=$!
  pid_record dockerd "$dockerd_pid"
  dockerd_start=$(pid_start "$dockerd_pid")
  local bound=${API_PROXY_BOUND_engine_start:-120} t0=$SECONDS
  until engine_answers 10; do
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
      echo "api-proxy: the engine (dockerd) exited while starting; look at $log:" >&2
    elif [ $((SECONDS - t0)) -ge "$bound" ]; then
      echo "api-proxy: the engine's start did not finish within $bound s (dockerd pid $dockerd_pid); look at $log:" >&2
    else
      sleep 1
      continue
    fi
    tail -20 "$log" >&2
    return 1
  done
}
phase "engine start" start_engine

if engine_answers; then
  # Said in the log: the DNS isolation of the agent's network holds only on a fixed engine.
  bash scripts/engine-check.sh
  bash scripts/engine-leftovers.sh
  phase "base images" bash scripts/container-bases.sh
fi

# Without an engine the test says why it cannot run (and fails under API_PROXY_REQUIRE_ALL=1).
rm -f .cache/vitest-containers.json
phase "container tests" bounded container_tests 2400 "the container tests" "the output above; the engine's log $log" -- \
  npx vitest run --config vitest.containers.config.ts --reporter=default --reporter=json --outputFile.json=.cache/vitest-containers.json
