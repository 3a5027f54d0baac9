import type { Config, ProviderConfig } from '../config.js';
import { ProxyError } from '../core/errors.js';
import type { Exchange } from '../core/exchange.js';
import type { Ledger, Reservation } from '../usage/ledger.js';
import { ScanError, type Scan } from './body-scan.js';
import { hasBody, isMultipart, readBody, scanBody, type HeldBody } from './body.js';
import { callerAllowed } from './caller-auth.js';
import { ModelPolicy } from './models.js';
import { EPHEMERAL_KEYS, routeLabel, routeOf, type Route } from './routes.js';
import { requestTarget } from './target.js';
import { ToolPolicy } from './tools.js';

/** What the request's steps decided: where it goes upstream, and what it is. */
export interface Admitted {
  /** The path in normal form plus the query as sent, less a `key` parameter: what the upstream reads. */
  upstreamTarget: string;
  route: Route;
}

/** A model call as admitted: its hold on the budget, and the model it names (for a usage that cannot be read). */
export interface AdmittedCall {
  reservation: Reservation;
  model: string | undefined;
}

/** What the body's steps decided: the bytes to send when they were held, and a model call's reservation. */
export interface Held {
  raw?: HeldBody;
  call?: AdmittedCall;
}

/** What MAX_REQUESTS counts: every forwarded request but GET and HEAD. */
const countsAsRequest = (method: string | undefined): boolean => method !== 'GET' && method !== 'HEAD';

// What ALLOWED_MODELS reads on a model route: JSON, in UTF-8, or a body with no type.
const JSON_TYPE = /^application\/json\s*(;\s*charset\s*=\s*"?utf-8"?\s*)?$/i;

/**
 * The spend controls as ordered admission steps, run before anything goes
 * upstream. `request` holds the steps every exchange passes (WebSocket upgrades
 * included); `body` those of its body: a guarded model call's body is held,
 * checked and reserved against the budget. Each step throws the ProxyError the
 * caller gets; what cannot be checked is refused, never waved through.
 */
export class Admission {
  readonly models: ModelPolicy | null;
  readonly tools: ToolPolicy;

  /** `served`: the port's provider, whose routes, base path and route list apply. */
  constructor(
    private readonly config: Config,
    private readonly served: ProviderConfig,
    private readonly ledger: Ledger,
    private readonly isDraining: () => boolean,
  ) {
    this.models = config.allowedModels ? new ModelPolicy(config.allowedModels) : null;
    this.tools = new ToolPolicy(config.allowedMcpServers);
  }

  /** Draining, the target's normal form and route, the caller's token, the declared size, the route list, the budget. */
  request(ex: Exchange): Admitted {
    const { config, served } = this;
    if (this.isDraining()) throw new ProxyError('draining', 'The proxy is shutting down; retry on another instance.');
    const target = requestTarget(ex.req.url ?? '', served.basePath);
    const method = ex.req.method ?? 'GET';
    const route = routeOf(served.provider.families, method, target.segments);
    ex.path = target.path + target.query;
    ex.route = routeLabel(route, served.basePath);
    if (!callerAllowed(ex.req.headers, config.proxyAuthToken)) {
      throw new ProxyError('proxy_auth_required', 'This proxy needs its token as the bearer key.');
    }
    const length = ex.req.headers['content-length'];
    if (length !== undefined && Number(length) > config.maxBodyBytes) {
      throw new ProxyError('body_too_large', `The request body is over ${config.maxBodyBytes} bytes.`);
    }
    // An upstream that routes `/v1/Responses` as `/v1/responses` would see another route than the table does.
    if (route.misspelled) {
      throw new ProxyError('bad_request_target', 'Route names are spelled as the API spells them, such as /v1/responses.');
    }
    this.#routeAllowed(route, method);
    // A model in the query string is read by some servers, and Google's APIs name it in the path: each must pass too.
    if (this.models) this.models.checkAll([...queryModels(target.query), ...(route.pathModel === undefined ? [] : [route.pathModel])]);
    this.ledger.admit(false); // spent: refused before anything is read or sent
    return { upstreamTarget: target.path + target.query, route };
  }

  #routeAllowed(route: Route, method: string): void {
    const allowed = this.served.allowedRoutes;
    if (route.family === EPHEMERAL_KEYS) {
      // `*` does not open it, nor `realtime`: only naming it does.
      if (!allowed.includes(EPHEMERAL_KEYS)) throw routeRefused(route, 'it mints a credential usable outside the sandbox; ALLOWED_ROUTES must name ephemeral_keys');
      return;
    }
    if (!allowed.includes('*') && !allowed.includes(route.family)) throw routeRefused(route, `ALLOWED_ROUTES is ${allowed.join(',')}`);
    // Guarded, a counted family passes only in the shapes whose spend the ledger reads.
    if (this.config.guarded && route.entry?.guardedShapes && !route.shape) {
      throw routeRefused(route, `${method} on this path is not one the budget can count`);
    }
  }

  /**
   * The body's steps, after `request`. Every model call holds a reservation.
   * Its body is held and scanned strictly (body-scan.ts) when guarded, and on
   * a Responses call always (its hosted tools are checked guarded or not):
   * models, tools and `background` checked, the reservation estimated from
   * it. Otherwise it streams, reserved by its declared size. Another body is
   * held only for ALLOWED_MODELS. Synchronous unless a body is held;
   * MAX_REQUESTS counts the exchange once it may go upstream.
   */
  body(ex: Exchange, route: Route): Held | Promise<Held> {
    const { req } = ex;
    const counts = countsAsRequest(req.method);
    if (route.shape?.modelCall === true) {
      if (hasBody(req) && (this.config.guarded || route.entry?.hostedTools === true)) return this.#modelCall(ex, route, counts);
      const declared = Number(req.headers['content-length'] ?? 0);
      return { call: { reservation: this.ledger.reserve(ex.id, estimate(null, declared, this.config.reserveTokens), counts, this.served.provider.name), model: route.pathModel } };
    }
    if (!this.models || !hasBody(req) || isMultipart(req)) {
      this.ledger.admit(counts);
      return {};
    }
    return this.#otherBody(ex, counts);
  }

  async #modelCall(ex: Exchange, route: Route, counts: boolean): Promise<Held> {
    const { raw, scan } = await this.#read(ex);
    const type = String(ex.req.headers['content-type'] ?? '').trim();
    if (this.models) {
      // Only a JSON object in strict UTF-8 names its model for certain; anything else is refused.
      if (type !== '' && !JSON_TYPE.test(type)) throw ModelPolicy.unreadable(`sent as ${type.slice(0, 64)}`);
      if (scan instanceof ScanError) throw ModelPolicy.unreadable(scan.message);
      this.models.checkAll(scan.models);
    }
    if (scan instanceof ScanError) {
      if (route.entry?.hostedTools === true) throw new ProxyError('tool_not_allowed', `The request's tools cannot be checked (${scan.message}), so it was refused.`);
    } else {
      this.tools.check(scan.tools);
      if (this.config.guarded && scan.background.some((b) => b !== false && b !== null)) {
        throw new ProxyError('background_not_allowed', "A background call reports its usage later, elsewhere: this sandbox's budget cannot count it.");
      }
    }
    const read = scan instanceof ScanError ? null : scan;
    const model = route.pathModel ?? read?.models.find((m): m is string => typeof m === 'string');
    const reservation = this.ledger.reserve(ex.id, estimate(read, raw.length, this.config.reserveTokens), counts, this.served.provider.name);
    return { raw, call: { reservation, model } };
  }

  /** A body on another route, under ALLOWED_MODELS: a model it names must pass; what does not decode is refused. */
  async #otherBody(ex: Exchange, counts: boolean): Promise<Held> {
    const { raw, scan } = await this.#read(ex);
    if (scan instanceof ScanError) {
      if (scan.undecodable) throw ModelPolicy.unreadable(scan.message);
    } else {
      this.models!.checkAll(scan.models);
    }
    this.ledger.admit(counts);
    return { raw };
  }

  /** The body held (within MAX_BODY_BYTES) and scanned as the upstream will decode it. */
  async #read(ex: Exchange): Promise<{ raw: HeldBody; scan: Scan | ScanError }> {
    const raw = await readBody(ex.req, this.config.maxBodyBytes, this.config.idleTimeoutMs);
    ex.bytesIn = raw.length;
    return { raw, scan: await scanBody(raw, ex.req.headers['content-encoding'], this.config.maxBodyBytes) };
  }
}

/** Every value of a `model` query parameter, however its key is escaped or cased. */
function queryModels(query: string): string[] {
  if (query === '') return [];
  const out: string[] = [];
  for (const [key, value] of new URLSearchParams(query)) if (key.toLowerCase() === 'model') out.push(value);
  return out;
}

/** A call's reservation: its input (decoded bytes / 4, at least the bytes sent) plus its output limit, or RESERVE_TOKENS when it sets none. */
export function estimate(scan: Scan | null, rawBytes: number, reserveTokens: number): number {
  const bytes = Math.max(scan?.bytes ?? 0, rawBytes);
  return Math.ceil(bytes / 4) + (scan?.maxOutput ?? reserveTokens);
}

const routeRefused = (route: Route, why: string): ProxyError =>
  new ProxyError('route_not_allowed', `This sandbox does not forward the ${JSON.stringify(route.family.slice(0, 64))} routes: ${why}.`);
