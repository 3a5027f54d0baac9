import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const PREFIX = 'api_proxy_';

// Streams last minutes: buckets run from a health probe's 5 ms to a 10 min stream.
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * One registry per app, so tests can build several apps in one process.
 * `inFlight` is read at scrape time: a gauge set per exchange cost two label
 * hashes and an allocation on every request.
 */
export function createMetrics(inFlight: () => number) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: PREFIX });
  const registers = [registry];
  return {
    registry,
    requests: new Counter({
      name: `${PREFIX}requests_total`,
      help: 'Forwarded requests, by method, route family and status sent to the caller.',
      labelNames: ['method', 'route', 'status'] as const,
      registers,
    }),
    duration: new Histogram({
      name: `${PREFIX}request_duration_seconds`,
      help: 'Time from the request to the last byte sent to the caller.',
      labelNames: ['route'] as const,
      buckets: DURATION_BUCKETS,
      registers,
    }),
    firstByte: new Histogram({
      name: `${PREFIX}upstream_first_byte_seconds`,
      help: 'Time from the request to the upstream response headers.',
      labelNames: ['route'] as const,
      buckets: DURATION_BUCKETS,
      registers,
    }),
    inFlight: new Gauge({
      name: `${PREFIX}requests_in_flight`,
      help: 'Forwarded HTTP exchanges under way.',
      registers,
      collect() {
        this.set(inFlight());
      },
    }),
    upstreamErrors: new Counter({
      name: `${PREFIX}upstream_errors_total`,
      help: 'Exchanges that ended in a proxy error, by error code.',
      labelNames: ['code'] as const,
      registers,
    }),
    upstreamAuthFailures: new Counter({
      name: `${PREFIX}upstream_auth_failures_total`,
      help: 'Upstream 401/403 answers: the configured key was rejected.',
      labelNames: ['status'] as const,
      registers,
    }),
    websocketsActive: new Gauge({
      name: `${PREFIX}websocket_connections_active`,
      help: 'WebSocket tunnels open now.',
      registers,
    }),
    websocketsTotal: new Counter({
      name: `${PREFIX}websocket_connections_total`,
      help: 'WebSocket upgrades answered, by status.',
      labelNames: ['status'] as const,
      registers,
    }),
    requestBytes: new Counter({
      name: `${PREFIX}request_body_bytes_total`,
      help: 'Body bytes sent upstream (WebSocket frames included).',
      registers,
    }),
    responseBytes: new Counter({
      name: `${PREFIX}response_body_bytes_total`,
      help: 'Body bytes sent to callers (WebSocket frames included).',
      registers,
    }),
    tokens: new Counter({
      name: `${PREFIX}tokens_total`,
      help: 'Tokens the upstream reported, by provider, model (at most 50, then other) and type: input (cached and cache writes included), cached_input, cache_write, output (reasoning included), reasoning.',
      labelNames: ['provider', 'model', 'type'] as const,
      registers,
    }),
    usageUnknown: new Counter({
      name: `${PREFIX}usage_unknown_total`,
      help: 'Model responses whose usage could not be read (cut short, no usage reported, too large to inspect).',
      registers,
    }),
    keyReloads: new Counter({
      name: `${PREFIX}key_reloads_total`,
      help: 'Key file reloads, by result.',
      labelNames: ['result'] as const,
      registers,
    }),
  };
}
