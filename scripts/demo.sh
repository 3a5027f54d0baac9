#!/usr/bin/env bash
# The demo from a fresh clone: installs npm packages if needed, builds, runs.
# Uses Squid when it is installed (scripts/test.sh installs it); no key, no internet.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! npm ls --depth=0 >/dev/null 2>&1; then
  npm ci --no-audit --no-fund
fi
npm run --silent demo
