#!/usr/bin/env bash
# Installs Debian packages for the tests, without letting them start services
# (policy-rc.d): no system Squid on :3128, no Docker engine; the tests start
# their own. Needs root. Usage: apt-install.sh PACKAGE...
set -euo pipefail
[ $# -gt 0 ] || exit 0
echo "installing $* from Debian"
apt-get update -qq
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
