import type { Config } from '../config.js';
import { ProxyError } from '../errors.js';
import type { Exchange } from '../exchange.js';
import type { Ledger, Reservation } from '../ledger.js';
import { hasBody, holdBody, isMultipart } from './body.js';
import { callerAllowed } from './caller-auth.js';
import { ModelPolicy } from './models.js';
import { EPHEMERAL_KEYS, familyMiscased, routeLabel, routeOf, type Route } from './routes.js';
import { requestTarget } from './target.js';

/** What the request's steps decided: where it goes upstream, and what it is. */
export interface Admitted {
  /** The path in normal form plus the query as sent: what the upstream reads. */
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
  raw?: Buffer;
  call?: AdmittedCall;
}

/** What MAX_REQUESTS counts: every forwarded request but GET and HEAD. */
export const countsAsRequest = (method: string | undefined): boolean => method !== 'GET' && method !== 'HEAD';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const OUTPUT_LIMITS = ['max_output_tokens', 'max_completion_tokens', 'max_tokens'] as const;

/**
 * The spend controls as ordered admission steps, run before anything goes
 * upstream. `request` holds the steps every exchange passes (WebSocket upgrades
 * included); `body` those of its body: a guarded model call's body is held,
 * checked and reserved against the budget. Each step throws the ProxyError the
 * caller gets; what cannot be checked is refused, never waved through.
 */
export class Admission {
  readonly models: ModelPolicy | null;

  constructor(
    private readonly config: Config,
    private readonly ledger: Ledger,
    private readonly isDraining: () => boolean,
  ) {
    this.models = config.allowedModels ? new ModelPolicy(config.allowedModels) : null;
  }

  /** Draining, the target's normal form and route, the caller's token, the declared size, the route list, the budget. */
  request(ex: Exchange): Admitted {
    const { config } = this;
    if (this.isDraining()) throw new ProxyError('draining', 'The proxy is shutting down; retry on another instance.');
    const target = requestTarget(ex.req.url ?? '', config.basePath);
    const method = ex.req.method ?? 'GET';
    const route = routeOf(method, target.segments);
    ex.path = target.path + target.query;
    ex.route = routeLabel(route, config.basePath);
    if (!callerAllowed(ex.req.headers, config.proxyAuthToken)) {
      throw new ProxyError('proxy_auth_required', 'This proxy needs its token as the bearer key.');
    }
    const length = ex.req.headers['content-length'];
    if (length !== undefined && Number(length) > config.maxBodyBytes) {
      throw new ProxyError('body_too_large', `The request body is over ${config.maxBodyBytes} bytes.`);
    }
    // An upstream that routes `/v1/Responses` as `/v1/responses` would see another route than the table does.
    if (familyMiscased(route, target.segments)) {
      throw new ProxyError('bad_request_target', 'Route names are lower case, such as /v1/responses.');
    }
    this.#routeAllowed(route, method);
    this.ledger.admit(false); // spent: refused before anything is read or sent
    return { upstreamTarget: target.path + target.query, route };
  }

  #routeAllowed(route: Route, method: string): void {
    const allowed = this.config.allowedRoutes;
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
   * The body's steps, after `request`. A model call is reserved against the
   * budget: guarded, its body is held first (its model checked, `background`
   * refused, its reservation estimated from it, a multipart one included);
   * unguarded it streams, reserved by its declared size. Another body is held
   * only for ALLOWED_MODELS to read its model. Synchronous unless a body is
   * held; MAX_REQUESTS counts the exchange once it may go upstream.
   */
  body(ex: Exchange, route: Route): Held | Promise<Held> {
    const { req } = ex;
    const counts = countsAsRequest(req.method);
    if (route.shape?.modelCall === true) {
      // Every model call holds a reservation, whatever its body: nothing is counted for free.
      if (this.config.guarded && hasBody(req)) return this.#held(ex, true, counts);
      const declared = Number(req.headers['content-length'] ?? 0);
      return { call: { reservation: this.ledger.reserve(ex.id, estimate(undefined, declared, this.config.reserveTokens), counts), model: undefined } };
    }
    if (!this.models || !hasBody(req) || isMultipart(req)) {
      this.ledger.admit(counts);
      return {};
    }
    return this.#held(ex, false, counts);
  }

  async #held(ex: Exchange, modelCall: boolean, counts: boolean): Promise<Held> {
    const held = await holdBody(ex.req, this.config.maxBodyBytes, this.config.idleTimeoutMs, ModelPolicy.unreadable);
    ex.bytesIn = held.raw.length;
    this.models?.check(held.json);
    if (!modelCall) {
      this.ledger.admit(counts);
      return { raw: held.raw };
    }
    const body = isObj(held.json) ? held.json : undefined;
    if (body && body.background !== undefined && body.background !== false && body.background !== null) {
      throw new ProxyError('background_not_allowed', "A background call reports its usage later, elsewhere: this sandbox's budget cannot count it.");
    }
    const model = typeof body?.model === 'string' ? body.model : undefined;
    const reservation = this.ledger.reserve(ex.id, estimate(body, held.decodedBytes, this.config.reserveTokens), counts);
    return { raw: held.raw, call: { reservation, model } };
  }
}

/** A call's reservation: its input (decoded bytes / 4) plus its output limit, or RESERVE_TOKENS when it sets none. */
function estimate(body: Obj | undefined, bytes: number, reserveTokens: number): number {
  const limits = OUTPUT_LIMITS.map((k) => body?.[k]).filter((v): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0);
  return Math.ceil(bytes / 4) + (limits.length > 0 ? Math.max(...limits) : reserveTokens);
}

const routeRefused = (route: Route, why: string): ProxyError =>
  new ProxyError('route_not_allowed', `This sandbox does not forward the ${JSON.stringify(route.family.slice(0, 64))} routes: ${why}.`);
