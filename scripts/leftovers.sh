#!/usr/bin/env bash
# Clears what an earlier run on this machine left behind when it was killed
# before its own cleanup, and says what it cleared: processes the scripts
# recorded (scripts/lib/pids.sh), stopped by PID, and the tests' network
# namespaces (testkit/netns.ts names them apx<role><pid>ns) whose test process
# is gone. Anything else is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pids.sh

pid_stop_leftovers

ip=$(command -v ip || true)
if [ -n "$ip" ] && [ "$(id -u)" = 0 ]; then
  timeout 10 "$ip" netns list 2>/dev/null | while read -r name _; do
    [[ $name =~ ^apx[ae]([0-9]+)ns$ ]] || continue
    [ -d "/proc/${BASH_REMATCH[1]}" ] && continue
    echo "leftovers: deleting network namespace $name, left by test process ${BASH_REMATCH[1]}" >&2
    timeout 10 "$ip" netns del "$name" || true
  done
fi
