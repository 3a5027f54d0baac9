# shellcheck shell=bash
# What the test scripts start and leave running (the Docker engine) is
# recorded here, so a later run can stop it by PID when this one was killed
# before its own cleanup. Machine-wide when root, since CI runs each time in a
# fresh clone; .cache/run otherwise. API_PROXY_RUN_DIR overrides both.
if [ -z "${API_PROXY_RUN_DIR:-}" ]; then
  if [ "$(id -u)" = 0 ]; then API_PROXY_RUN_DIR=/run/api-proxy-tests; else API_PROXY_RUN_DIR=$PWD/.cache/run; fi
fi

# The kernel's start time of PID (clock ticks since boot): with the PID, it
# names one process, never a later one that reused the number. Fails when
# there is no such process, or only its zombie.
pid_start() {
  local stat rest
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  # Fields after the command name, which may hold spaces and parentheses.
  read -ra rest <<< "${stat##*) }"
  [ "${rest[0]}" != Z ] || return 1
  echo "${rest[19]}"
}

# PID's command line, on one line.
pid_command() { tr '\0\n' '  ' < "/proc/$1/cmdline" 2>/dev/null | sed 's/ $//'; }

# pid_record NAME PID: "PID START COMMAND" in NAME.pid.
pid_record() {
  mkdir -p "$API_PROXY_RUN_DIR"
  printf '%s %s %s\n' "$2" "$(pid_start "$2")" "$(pid_command "$2")" > "$API_PROXY_RUN_DIR/$1.pid"
}

pid_forget() { rm -f "$API_PROXY_RUN_DIR/$1.pid"; }

# pid_stop PID START: SIGTERM, then up to API_PROXY_BOUND_leftover_stop (30)
# seconds while PID is still the process that started at START, then SIGKILL;
# returns 1 when it took the SIGKILL.
pid_stop() {
  local pid=$1 start=$2 deadline=$((SECONDS + ${API_PROXY_BOUND_leftover_stop:-30}))
  kill -TERM "$pid" 2>/dev/null || true
  while [ "$(pid_start "$pid")" = "$start" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  [ "$(pid_start "$pid")" = "$start" ] || return 0
  kill -KILL "$pid" 2>/dev/null || true
  return 1
}

# Stops every recorded process that is still the one recorded (pid_stop) and
# says so; a PID now held by another process is left alone, said in one line.
# Never by name.
pid_stop_leftovers() {
  local file pid start command now
  for file in "$API_PROXY_RUN_DIR"/*.pid; do
    [ -e "$file" ] || continue
    read -r pid start command < "$file" || true
    now=$(pid_start "$pid") || now=
    if [ -z "$now" ]; then
      :
    elif [ "$now" != "$start" ]; then
      echo "leftovers: $(basename "$file") names pid $pid, now another process ($(pid_command "$pid")); left alone" >&2
    else
      echo "leftovers: stopping pid $pid ($command), left running by an earlier run" >&2
      pid_stop "$pid" "$start" || echo "leftovers: pid $pid did not stop within ${API_PROXY_BOUND_leftover_stop:-30} s; killed" >&2
    fi
    rm -f "$file"
  done
}
