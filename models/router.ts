import { systemClock, type Clock } from '../core/clock.js';
import { ErrorCode, TroupeError, isRetryable, isTroupeError } from '../core/errors.js';
import { splitModelRef, type ModelCallContext, type ModelProvider, type ModelProviders, type ModelRequest, type ModelResponse } from '../core/model.js';

/** Ordered candidates (`provider:model`) of a route, optionally different when recovering. */
export type RouteSpec = readonly string[] | { plan: readonly string[]; recover?: readonly string[] };

/** A model being retired: once `after` (ISO date) has passed, calls go to `replacedBy`. */
export interface Deprecation {
  replacedBy: string;
  /** Switch from this instant on; without it the switch is immediate. */
  after?: string;
}

/** Circuit-breaker settings, per provider id. */
export interface BreakerOptions {
  /** Consecutive retryable failures that open the circuit. Default 5. */
  failureThreshold?: number;
  /** How long an open circuit refuses calls before one trial is let through. Default 30 000 ms. */
  cooldownMs?: number;
}

/** Options of {@link createRouter}. */
export interface RouterOptions {
  /** Registry id, the part before `:` in `router:planner`. Default `router`. */
  id?: string;
  /** The providers candidates name; the router is not one of them. */
  providers: ModelProviders;
  /** Routes by name: agents ask for `router:<name>`. */
  routes: Readonly<Record<string, RouteSpec>>;
  /** `provider:model` → its replacement; chains are followed, cycles are refused. */
  deprecations?: Readonly<Record<string, Deprecation>>;
  breaker?: BreakerOptions;
  /** Abandon a candidate after this long and try the next. Default: no limit of the router's own. */
  attemptTimeoutMs?: number;
  /** Time source of deprecation dates, cooldowns and attempt timeouts. */
  clock?: Clock;
}

/** One try of a candidate, as recorded in `meta.attempts`. */
export interface RouteAttempt {
  candidate: string;
  error?: string;
  /**
   * Set when the candidate was not called: its provider's circuit is open, or the provider
   * asked (`Retry-After`) not to be called again before a time that has not come.
   */
  skipped?: true;
  /** For a skipped candidate: the real error that got it skipped (`ECONNREFUSED`, `HTTP 429: …`). */
  lastError?: string;
}

const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error));

/** Splits `provider:model` exactly as the node does when it resolves a reference. */
const split = splitModelRef;

/**
 * Per-provider circuit breaker: closed → open after `failureThreshold` consecutive retryable
 * failures → half-open after `cooldownMs`, when exactly one trial call decides between
 * closed and open again. Any answer, even a 4xx, proves the provider is up. It remembers the
 * last failure, so a call refused while open can say what is actually wrong.
 */
function createBreaker(threshold: number, cooldownMs: number, clock: Clock) {
  let state: 'closed' | 'open' | 'half-open' = 'closed';
  let failures = 0;
  let openedAt = 0;
  let trial = false;
  let lastError: unknown;
  return {
    /** The failure that last counted against the provider. */
    get lastError(): unknown {
      return lastError;
    },
    get state() {
      return state === 'open' && clock.now() - openedAt >= cooldownMs ? 'half-open' : state;
    },
    /** Ms until a trial may run, when refusing. */
    retryInMs: () => Math.max(0, openedAt + cooldownMs - clock.now()),
    /** Whether a call may go through now; a half-open breaker admits one caller. */
    acquire(): boolean {
      if (state === 'open' && clock.now() - openedAt >= cooldownMs) state = 'half-open';
      if (state === 'closed') return true;
      if (state === 'half-open' && !trial) return (trial = true);
      return false;
    },
    succeeded() {
      state = 'closed';
      failures = 0;
      trial = false;
    },
    failed(error: unknown) {
      lastError = error;
      failures += 1;
      if (state === 'half-open' || failures >= threshold) {
        state = 'open';
        openedAt = clock.now();
      }
      trial = false;
    },
    /** The call was aborted by its caller: it proves nothing either way. */
    released() {
      trial = false;
    },
  };
}

/** A breaker as seen from outside, for tests and dashboards. */
export type BreakerState = 'closed' | 'open' | 'half-open';

/** A router is a provider with a view of its breakers. */
export interface ModelRouter extends ModelProvider {
  /** The breaker state of each provider id the routes use. */
  breakers(): Record<string, BreakerState>;
}

/**
 * A provider that serves `router:<route>` by trying the route's candidates in order, mapping
 * retired models to their replacements, skipping providers whose circuit is open, and
 * falling back on transient failures. How each call was served lands in `response.meta`,
 * which the run host journals.
 */
export function createRouter(options: RouterOptions): ModelRouter {
  if (!options || typeof options.providers !== 'object' || typeof options.routes !== 'object') {
    throw new TypeError('createRouter({ providers, routes }) needs providers and routes');
  }
  const id = options.id ?? 'router';
  const o = {
    id,
    providers: { ...options.providers },
    routes: new Map<string, { plan: string[]; recover: string[] }>(),
    deprecations: new Map<string, { replacedBy: string; after: number }>(),
    failureThreshold: options.breaker?.failureThreshold ?? 5,
    cooldownMs: options.breaker?.cooldownMs ?? 30_000,
    attemptTimeoutMs: options.attemptTimeoutMs,
    clock: options.clock ?? systemClock,
  };
  if (!Number.isInteger(o.failureThreshold) || o.failureThreshold < 1) throw new TypeError(`router "${id}": breaker.failureThreshold must be a positive integer`);
  if (!(o.cooldownMs >= 0)) throw new TypeError(`router "${id}": breaker.cooldownMs must be a non-negative number`);
  if (o.attemptTimeoutMs !== undefined && !(o.attemptTimeoutMs > 0)) throw new TypeError(`router "${id}": attemptTimeoutMs must be positive`);

  const checkRef = (ref: unknown, where: string): string => {
    if (typeof ref !== 'string' || ref === '') throw new TypeError(`router "${id}": ${where} must be a "provider:model" string`);
    const { provider } = split(ref);
    if (provider === id) throw new TypeError(`router "${id}": ${where} "${ref}" names the router itself`);
    if (!o.providers[provider]) {
      throw new TypeError(`router "${id}": ${where} "${ref}" names unknown provider "${provider}"; known: ${Object.keys(o.providers).join(', ') || 'none'}`);
    }
    return ref;
  };
  for (const [name, spec] of Object.entries(options.routes)) {
    const plan: unknown = Array.isArray(spec) ? spec : (spec as { plan?: unknown } | null)?.plan;
    const recover: unknown = Array.isArray(spec) ? spec : ((spec as { recover?: unknown } | null)?.recover ?? plan);
    if (!Array.isArray(plan) || plan.length === 0 || !Array.isArray(recover) || recover.length === 0) {
      throw new TypeError(`router "${id}": route "${name}" needs at least one candidate (an array, or { plan, recover? })`);
    }
    o.routes.set(name, {
      plan: plan.map((r: unknown, i) => checkRef(r, `route "${name}" candidate ${i + 1}`)),
      recover: recover.map((r: unknown, i) => checkRef(r, `route "${name}" recover candidate ${i + 1}`)),
    });
  }
  if (o.routes.size === 0) throw new TypeError(`router "${id}": routes must name at least one route`);
  for (const [from, d] of Object.entries(options.deprecations ?? {})) {
    checkRef(from, 'deprecated model');
    checkRef(d?.replacedBy, `replacement of "${from}"`);
    const after = d.after === undefined ? -Infinity : Date.parse(d.after);
    if (Number.isNaN(after)) throw new TypeError(`router "${id}": deprecation of "${from}" has an unreadable date "${d.after}" (use ISO 8601)`);
    o.deprecations.set(from, { replacedBy: d.replacedBy, after });
  }
  // Cycles are refused regardless of dates: once every date passed, the chain would never end.
  for (const start of o.deprecations.keys()) {
    const seen = [start];
    for (let next = o.deprecations.get(start)?.replacedBy; next !== undefined; next = o.deprecations.get(next)?.replacedBy) {
      if (seen.includes(next)) throw new TypeError(`router "${id}": deprecations form a cycle: ${[...seen, next].join(' → ')}`);
      seen.push(next);
    }
  }

  const breakers = new Map<string, ReturnType<typeof createBreaker>>();
  /**
   * Candidates whose provider answered "not before then" (a 429 or 503 with `Retry-After`),
   * with that answer. Such an answer proves the provider up and says exactly when to come
   * back, so it pauses that one candidate for the time asked instead of counting towards
   * the circuit: a burst of 429s must not open the circuit and lock the provider out for
   * `cooldownMs` (what a resilience4j or Polly breaker that counts every failure does),
   * and it must not be called again early either (what a plain retry loop would do).
   */
  const pauses = new Map<string, { until: number; error: unknown }>();
  const breakerOf = (provider: string) => {
    let breaker = breakers.get(provider);
    if (!breaker) breakers.set(provider, (breaker = createBreaker(o.failureThreshold, o.cooldownMs, o.clock)));
    return breaker;
  };

  /** Follows the deprecation chain as far as its dates allow. */
  const current = (ref: string): string => {
    let served = ref;
    for (let d = o.deprecations.get(served); d && o.clock.now() >= d.after; d = o.deprecations.get(served)) served = d.replacedBy;
    return served;
  };

  /** One candidate's call, abandoned after `attemptTimeoutMs` on the router's clock. */
  const attempt = async (provider: ModelProvider, request: ModelRequest, context: ModelCallContext): Promise<ModelResponse> => {
    const { signal } = context;
    if (o.attemptTimeoutMs === undefined) return provider.generate(request, context);
    const limit = o.attemptTimeoutMs;
    const controller = new AbortController();
    const stopTimer = o.clock.setTimer(() => controller.abort(new TroupeError(ErrorCode.MODEL_FAILED, `no answer within ${limit} ms`, { details: { reason: 'timeout' }, retryable: true })), limit);
    const call = provider.generate(request, { ...context, signal: AbortSignal.any([signal, controller.signal]) });
    const timedOut = new Promise<never>((_, reject) => controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true }));
    try {
      return await Promise.race([call, timedOut]);
    } finally {
      stopTimer();
      call.catch(() => undefined); // the loser of the race must not surface as unhandled
    }
  };

  return {
    id,
    breakers: () => Object.fromEntries([...new Set([...o.routes.values()].flatMap((r) => [...r.plan, ...r.recover]).map((r) => split(r).provider))].map((p) => [p, breakers.get(p)?.state ?? 'closed'])),
    check(model) {
      const route = o.routes.get(model);
      if (!route) return `router "${id}" has no route "${model}"; routes: ${[...o.routes.keys()].join(', ')}`;
      // Every model the route may reach is asked: its candidates for both phases and, whatever
      // their dates, the replacements deprecations will move them to during a long run.
      // (Providers the router does not know were refused when it was made.)
      const problems: string[] = [];
      const seen = new Set<string>();
      const visit = (ref: string, where: string) => {
        for (let next: string | undefined = ref; next !== undefined && !seen.has(next); next = o.deprecations.get(next)?.replacedBy) {
          seen.add(next);
          const target = split(next);
          let problem: string | undefined;
          try {
            problem = o.providers[target.provider]!.check?.(target.model);
          } catch (error) {
            problem = messageOf(error);
          }
          if (problem !== undefined) problems.push(`${where} "${next}"${next === ref ? '' : ` (replacing "${ref}")`}: ${problem}`);
        }
      };
      route.plan.forEach((ref, i) => visit(ref, `candidate ${i + 1}`));
      route.recover.forEach((ref, i) => visit(ref, `recover candidate ${i + 1}`));
      return problems.length ? `router "${id}" route "${model}": ${problems.join('; ')}` : undefined;
    },
    async generate(request, context): Promise<ModelResponse> {
      const route = o.routes.get(request.model);
      if (!route) {
        throw new TroupeError(ErrorCode.MODEL_NOT_FOUND, `router "${id}" has no route "${request.model}"; routes: ${[...o.routes.keys()].join(', ')}`, {
          details: { router: id, route: request.model },
        });
      }
      const planned = request.phase === 'recover' ? route.recover : route.plan;
      const attempts: RouteAttempt[] = [];
      const tried = new Set<string>();
      // When the route may be tried again: the soonest any candidate is known to be
      // available, but only if every candidate said; one that just failed may work at once.
      const waits: Array<number | undefined> = [];
      // What went wrong for real (not "circuit open"): the first becomes the final `cause`.
      const causes: unknown[] = [];
      const skip = (candidate: string, error: string, last: unknown, waitMs: number) => {
        attempts.push({ candidate, error, skipped: true, ...(last !== undefined ? { lastError: messageOf(last) } : {}) });
        waits.push(waitMs);
        if (last !== undefined) causes.push(last);
      };
      for (const original of planned) {
        const candidate = current(original);
        if (tried.has(candidate)) continue; // two retired models may share a replacement
        tried.add(candidate);
        if (context.signal.aborted) throw context.signal.reason;
        const target = split(candidate);
        const pause = pauses.get(candidate);
        if (pause && o.clock.now() < pause.until) {
          const left = pause.until - o.clock.now();
          skip(candidate, `provider "${target.provider}" asked not to be called for another ${left} ms`, pause.error, left);
          continue;
        }
        pauses.delete(candidate);
        const breaker = breakerOf(target.provider);
        if (!breaker.acquire()) {
          skip(candidate, `circuit open for provider "${target.provider}"`, breaker.lastError, breaker.retryInMs());
          continue;
        }
        try {
          const response = await attempt(o.providers[target.provider]!, { ...request, model: target.model }, context);
          breaker.succeeded();
          attempts.push({ candidate });
          const meta: Record<string, unknown> = { route: request.model, requested: planned[0], served: candidate, attempts };
          if (candidate !== original) meta.deprecated = { from: original, to: candidate };
          if (response.model !== undefined && response.model !== candidate) meta.reported = response.model;
          if (response.meta !== undefined) meta.inner = response.meta;
          return { ...response, model: candidate, meta };
        } catch (error) {
          if (context.signal.aborted) {
            breaker.released();
            throw error;
          }
          // Fallback is for transient trouble; an error that says it is final stays final.
          if (!isRetryable(error)) {
            breaker.succeeded();
            throw error;
          }
          const asked = isTroupeError(error) ? error.retryAfterMs : undefined;
          if (asked !== undefined && asked > 0) {
            breaker.succeeded(); // it answered: up, just not for us yet
            pauses.set(candidate, { until: o.clock.now() + asked, error });
          } else breaker.failed(error);
          attempts.push({ candidate, error: messageOf(error) });
          waits.push(asked);
          causes.push(error);
        }
      }
      const summary = attempts.map((a) => `${a.candidate}: ${a.error}${a.lastError !== undefined ? ` (last error: ${a.lastError})` : ''}`).join('; ');
      const retryAfterMs = waits.every((w) => w !== undefined) ? Math.min(...(waits as number[])) : undefined;
      throw new TroupeError(ErrorCode.MODEL_FAILED, `router "${id}" route "${request.model}": every candidate failed (${summary})`, {
        details: { router: id, route: request.model, attempts },
        retryable: true,
        ...(causes.length ? { cause: causes[0] } : {}),
        ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
      });
    },
  };
}
