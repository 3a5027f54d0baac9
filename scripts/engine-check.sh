#!/usr/bin/env bash
# Warns, and never fails, when the Docker engine lets a container on an
# internal-only network resolve names through the host (CVE-2024-29018, fixed
# in 26.0.0, 25.0.4 and 23.0.11): on such an engine an agent can still send
# data out, encoded in DNS lookups, though it reaches no address but the sidecar.
set -uo pipefail
version=$(timeout -k 5 20 docker version --format '{{.Server.Version}}' 2>/dev/null) || {
  echo "engine-check: no Docker engine answers; its version is not checked" >&2
  exit 0
}
if ! [[ $version =~ ^([0-9]+)\.([0-9]+)\.([0-9]+) ]]; then
  echo "engine-check: cannot read the Docker engine's version '$version'; check it is 26.0, 25.0.4, 23.0.11 or later" >&2
  exit 0
fi
major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]} patch=${BASH_REMATCH[3]}
fixed=1
if (( major < 23 || major == 24 )); then fixed=0
elif (( major == 23 && minor == 0 && patch < 11 )); then fixed=0
elif (( major == 25 && minor == 0 && patch < 4 )); then fixed=0
fi
if (( fixed == 0 )); then
  echo "engine-check: WARNING: Docker engine $version forwards DNS queries from internal networks (CVE-2024-29018; fixed in 26.0.0, 25.0.4, 23.0.11): the agent could send data out in name lookups. Upgrade the engine, or check your distribution patched it." >&2
fi
exit 0
