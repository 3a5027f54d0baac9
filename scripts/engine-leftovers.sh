#!/usr/bin/env bash
# Removes from the Docker engine what an earlier container test left when it
# was killed before its own cleanup: the containers, networks and volumes of
# compose projects apxtest<pid> (test/containers/compose.test.ts) and those
# labelled by the Action's test (io.github.api-proxy.action-test=<pid>, and
# sandboxes io.github.api-proxy.action=<pid>-<attempt>-<random>), whose test
# process <pid> is gone. Left behind, their fixed subnets would fail the next
# run's networks. Says what it removes; touches nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bound.sh

pid_max=$(cat /proc/sys/kernel/pid_max)
# The test process an object's labels name, when that process is gone.
gone_owner() {
  local project=$1 test=$2 sandbox=$3 pid=
  if [[ $project =~ ^apxtest([0-9]+)$ ]]; then pid=${BASH_REMATCH[1]}
  elif [[ $test =~ ^([0-9]+)$ ]]; then pid=${BASH_REMATCH[1]}
  # A real runner's run id is far above any PID: never taken for a test's.
  elif [[ $sandbox =~ ^([0-9]+)-[0-9]+-[0-9a-z]+$ ]] && [ "${BASH_REMATCH[1]}" -le "$pid_max" ]; then pid=${BASH_REMATCH[1]}
  fi
  [ -n "$pid" ] && [ ! -d "/proc/$pid" ] && echo "$pid"
}

docker_() { bounded docker_leftovers 60 "docker $1 (leftovers)" "the engine's log, .cache/dockerd.log" -- docker "$@"; }
labels='{{.Label "com.docker.compose.project"}}|{{.Label "io.github.api-proxy.action-test"}}|{{.Label "io.github.api-proxy.action"}}'

for kind in container network volume; do
  case $kind in
    container) list=(ps -a --format "{{.ID}}|$labels") ;;
    network) list=(network ls --format "{{.ID}}|$labels") ;;
    volume) list=(volume ls --format "{{.Name}}|$labels") ;;
  esac
  stale=()
  owners=()
  # Separated by |: a label that is not set prints nothing.
  while IFS='|' read -r id project test sandbox; do
    owner=$(gone_owner "${project:-}" "${test:-}" "${sandbox:-}") || continue
    stale+=("$id")
    owners+=("$owner")
  done < <(docker_ "${list[@]}" | sed 's/<no value>//g')
  [ ${#stale[@]} -gt 0 ] || continue
  echo "leftovers: removing ${#stale[@]} ${kind}(s) of test processes that are gone (pids $(printf '%s\n' "${owners[@]}" | sort -u | paste -sd' '))" >&2
  case $kind in
    container) docker_ rm -f -v "${stale[@]}" >/dev/null ;;
    *) docker_ "$kind" rm "${stale[@]}" >/dev/null ;;
  esac
done
