# The api-proxy sidecar image. The default (last) stage is the sidecar; the
# fake-upstream stage serves the offline compose stack (docker-compose.offline.yml).

FROM node:22-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# Optional packages are platform binaries of dev tools (the Codex CLI's 400 MB
# among them); compiling needs none of them.
RUN npm ci --omit=optional --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src src
COPY testkit testkit
COPY scripts scripts
COPY bench bench
RUN npx tsc -p tsconfig.build.json

# A test fixture, not part of the product: the fake OpenAI upstream over TLS.
FROM build AS fake-upstream
RUN mkdir /pki && chown node:node /pki
USER 1000:1000
EXPOSE 443
CMD ["node", "dist/testkit/fake-upstream-server.js"]

FROM node:22-bookworm-slim AS prod-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && rm -rf /root/.npm

FROM node:22-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=10000 \
    REQUIRE_EGRESS_PROXY=true
WORKDIR /app
COPY --from=prod-deps /app/node_modules node_modules
# dist/package.json: the version /health reports, and "type": "module".
COPY --from=build /src/dist/package.json dist/package.json
COPY --from=build /src/dist/src dist/src
# Nothing in /app is writable by the process: with a read-only root filesystem
# the sidecar needs no writable path at all. node, by number: Kubernetes can
# check runAsNonRoot only against a numeric USER.
USER 1000:1000
# OpenAI's port; Anthropic's, Gemini's and Azure's when their keys are set.
EXPOSE 10000 10001 10003 10005
# Generous start period: readiness waits for the egress proxy, which may start later.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "dist/src/healthcheck.js"]
# Exec form: node is PID 1's child under `init: true`, or PID 1 itself, and gets SIGTERM.
ENTRYPOINT ["node", "dist/src/main.js"]
