#!/usr/bin/env bash
# Installs Debian packages for the tests, without letting them start services
# (policy-rc.d): no system Squid on :3128, no Docker engine; the tests start
# their own. Needs root. Usage: apt-install.sh PACKAGE...
# Bounded: a held apt or dpkg lock fails the step within API_PROXY_BOUND_apt_lock
# (120) seconds, naming the holder; a stalled mirror within the steps' bounds.
set -euo pipefail
[ $# -gt 0 ] || exit 0
cd "$(dirname "$0")/.."
. scripts/lib/bound.sh
. scripts/lib/pids.sh
lock_wait=${API_PROXY_BOUND_apt_lock:-120}

# The process holding an fcntl lock on FILE, from /proc/locks (apt and dpkg lock with fcntl).
lock_holder() {
  local inode pid
  inode=$(stat -c %i "$1" 2>/dev/null) || return 0
  pid=$(awk -v ino="$inode" '{ split($6, f, ":"); if (f[3] == ino) { print $5; exit } }' /proc/locks)
  [ -z "$pid" ] || echo "pid $pid ($(pid_command "$pid"))"
}

# Runs apt-get; when it failed on a lock, sets held to that file and returns 75.
held=
apt_get() {
  local err rc=0
  err=$(mktemp)
  "$@" 2>"$err" || rc=$?
  held=$(sed -n 's/.*Could not get lock \([^ ]*\)\. .*/\1/p; s/.*frontend lock (\([^)]*\)).*/\1/p' "$err" | head -1)
  [ -n "$held" ] || cat "$err" >&2
  rm -f "$err"
  if [ $rc != 0 ] && [ -n "$held" ]; then return 75; fi
  return $rc
}
gave_up_on_lock() {
  echo "apt-install: $held is held by $(lock_holder "$held"); gave up after $lock_wait s" >&2
  exit 75
}

echo "installing $* from Debian"
# apt-get update does not wait on its lock (DPkg::Lock::Timeout is dpkg's): retried within the same bound.
deadline=$((SECONDS + lock_wait))
while :; do
  rc=0
  apt_get bounded apt_update 300 "apt-get update" "the mirror in /etc/apt/sources.list*" -- apt-get update -qq || rc=$?
  if [ "$rc" != 75 ] || [ $SECONDS -ge "$deadline" ]; then break; fi
  sleep 2
done
[ "$rc" != 75 ] || gave_up_on_lock
[ "$rc" = 0 ] || exit "$rc"
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
rc=0
DEBIAN_FRONTEND=noninteractive apt_get bounded apt_install 900 "apt-get install $*" "the mirror, or dpkg's log /var/log/dpkg.log" -- \
  apt-get install -y -qq -o DPkg::Lock::Timeout="$lock_wait" "$@" >/dev/null || rc=$?
[ "$rc" != 75 ] || gave_up_on_lock
exit "$rc"
