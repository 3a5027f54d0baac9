/**
 * Route tables: which family a path belongs to, which requests are model
 * calls (counted, reserved, read for usage), which mint a credential. Each
 * provider brings its table as data (src/providers/); this is how one is read.
 */

/** One request shape of a family: a method and the segments after the family's (`*` matches one). */
export interface Shape {
  method: string;
  rest: readonly string[];
  /** A model call: its body is read, a reservation held, its answer read for usage. */
  modelCall?: boolean;
}

export interface Family {
  name: string;
  /** The path's first segments under the base path; `*` matches any one (an API version). */
  prefix: readonly string[];
  /**
   * Google's custom methods: the family's paths end in one segment
   * `{model}:{method}`, the method one of these, and the model is named there.
   */
  methods?: readonly string[];
  /** The index of the segment that names the model (Azure's `deployments/{deployment}`). */
  modelSegment?: number;
  /**
   * When guarded, only these shapes of the family pass; a family without a list
   * passes whole once allowed. The counted families are narrow on purpose:
   * whatever else they answer is not a model call the ledger can count.
   */
  guardedShapes?: readonly Shape[];
  /** Its bodies are multipart uploads whose parts name no model. */
  multipart?: boolean;
  /** Its model calls may name hosted tools the upstream reaches out to: always read, guarded or not. */
  hostedTools?: boolean;
  /** Its metrics label under the base path, when not the prefix (`chat/completions`). */
  label?: string;
}

export const post = (rest: string[], modelCall = false): Shape => ({ method: 'POST', rest, modelCall });
export const get = (rest: string[]): Shape => ({ method: 'GET', rest });
export const del = (rest: string[]): Shape => ({ method: 'DELETE', rest });

/** The routes that mint a credential for the caller: refused unless ALLOWED_ROUTES names this family. */
export const EPHEMERAL_KEYS = 'ephemeral_keys';

export interface Route {
  /** The family's name; for a path no family claims, its first segment (or `''`). */
  family: string;
  /** The table's entry, or undefined for a path it does not know. */
  entry: Family | undefined;
  /** The guarded shape it matches, if its family has a list. */
  shape: Shape | undefined;
  /** The model the path names (`models/{model}:{method}`), for a family with methods. */
  pathModel?: string;
  /** The family's defining segments (or its method) were sent in another case than the table's, or its model is not plainly spelled. */
  misspelled: boolean;
}

const matches = (pattern: readonly string[], segments: readonly string[]): boolean =>
  pattern.length === segments.length && pattern.every((p, i) => p === '*' || p === segments[i]);

/**
 * The route of a normalised path's segments (under the base path). Families are
 * compared case-insensitively: an upstream that routes `/v1/Responses` as
 * `/v1/responses` must not find the sidecar calling it something else.
 */
export function routeOf(families: readonly Family[], method: string, segments: readonly string[]): Route {
  const lower = segments.map((s) => s.toLowerCase());
  for (const entry of families) {
    if (!entry.prefix.every((p, i) => (p === '*' ? lower[i] !== undefined : lower[i] === p))) continue;
    const rest = segments.slice(entry.prefix.length);
    let misspelled = entry.prefix.some((p, i) => p !== '*' && segments[i] !== p);
    let pathModel: string | undefined;
    if (entry.methods) {
      const last = rest.length === 1 ? rest[0]! : '';
      const colon = last.lastIndexOf(':');
      const sent = last.slice(colon + 1);
      const known = colon > 0 ? entry.methods.find((m) => m.toLowerCase() === sent.toLowerCase()) : undefined;
      if (known === undefined) continue;
      pathModel = last.slice(0, colon);
      misspelled ||= known !== sent;
    }
    if (entry.modelSegment !== undefined) pathModel = segments[entry.modelSegment];
    // A model named in the path holds neither: an escaped character or a `:` could make the upstream read another model or method.
    if (pathModel !== undefined && /[%:]/.test(pathModel)) misspelled = true;
    const shape = entry.guardedShapes?.find((s) => s.method === method && matches(s.rest, rest));
    return { family: entry.name, entry, shape, pathModel, misspelled };
  }
  return { family: lower[0] ?? '', entry: undefined, shape: undefined, misspelled: false };
}

/** A bounded label for metrics: the known family's path under the base, else `other`. */
export function routeLabel(route: Route, basePath: string): string {
  if (!route.entry) return 'other';
  return `${basePath}/${route.entry.label ?? route.entry.prefix.join('/')}`;
}
