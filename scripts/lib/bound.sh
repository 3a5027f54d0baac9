# shellcheck shell=bash
# Bounds and phases for the test scripts (sourced). Every external command
# that can wait runs under `bounded`, so no run can hang on a half-started
# engine, a stalled mirror or a held lock; `phase` says where the time went.

# bounded KEY SECONDS STEP HINT -- COMMAND...
# Runs COMMAND under timeout(1): SIGTERM at SECONDS, SIGKILL to its whole
# process group API_PROXY_BOUND_GRACE (10) seconds later. On expiry prints one
# line naming STEP, the wait and HINT (what to look at), and returns 124.
# API_PROXY_BOUND_<KEY> overrides SECONDS (the tests set short ones).
# The stdout and stderr the scripts had when they sourced this: phase lines and
# the expiry line go there even when a caller sends the command's output away.
exec {phase_stdout}>&1 {bound_stderr}>&2
bounded() {
  local key=$1 secs=$2 step=$3 hint=$4
  shift 4
  [ "${1:-}" = -- ] && shift
  local var="API_PROXY_BOUND_${key}"
  secs=${!var:-$secs}
  local t0=$SECONDS rc=0
  timeout -k "${API_PROXY_BOUND_GRACE:-10}" "$secs" "$@" || rc=$?
  # 124: ended by the SIGTERM; 137: needed the SIGKILL (checked against the clock,
  # since a command can also die of a SIGKILL of its own).
  if [ $rc = 124 ] || { [ $rc = 137 ] && [ $((SECONDS - t0)) -ge "$secs" ]; }; then
    echo "api-proxy: $step did not finish within $secs s and was stopped; look at $hint" >&"$bound_stderr"
    return 124
  fi
  return $rc
}

# phase NAME COMMAND...: runs COMMAND, printing the phase as it starts and as it
# ends with its elapsed seconds; records it in .cache/ for phase_summary (also
# across scripts) and for the run's own bound (.ci/run names the phase it was in).
phase() {
  local name=$1
  shift
  local t0=$SECONDS rc=0
  mkdir -p .cache
  printf '%s\n' "$name" > .cache/phase
  echo "== $name: started" >&"$phase_stdout"
  "$@" || rc=$?
  local took=$((SECONDS - t0)) how=ok
  [ $rc = 0 ] || how="failed (exit $rc)"
  echo "== $name: $how in $took s" >&"$phase_stdout"
  printf '%s %s s\n' "$name" "$took" >> .cache/phases
  return $rc
}

# One line with the seconds of every phase since .cache/phases was cleared.
phase_summary() {
  [ -s .cache/phases ] || return 0
  echo "phases: $(paste -sd';' .cache/phases | sed 's/;/; /g')"
}
