/**
 * The one exponential backoff of Troupe: the agent's retries, the crew's supervision
 * restarts and the ws transport's reconnects all wait `backoffDelay(...)`, so the formula,
 * its bounds and its jitter have a single owner.
 */

/** How waits grow between attempts. */
export interface BackoffPolicy {
  /** Wait before the first retry (attempt 1), in ms. */
  initialDelayMs: number;
  /** No wait exceeds this, jitter or not. */
  maxDelayMs: number;
  /** Growth per attempt (2 doubles). At least 1. */
  factor: number;
  /**
   * Fraction of each wait that is randomised, in [0, 1]: a wait of `base` becomes one in
   * [base·(1 − jitter), base]. 0 turns jitter off; 0.5 is "equal jitter".
   */
  jitter: number;
}

/**
 * Throws a `TypeError` naming `owner` and the field when `policy` breaks a rule; returns it
 * otherwise, so definitions can check and store in one step.
 */
export function checkBackoff<P extends BackoffPolicy>(owner: string, prefix: string, policy: P): P {
  const fail = (field: string, rule: string) => {
    throw new TypeError(`${owner}: ${prefix}${field} ${rule}`);
  };
  if (!(Number.isFinite(policy.initialDelayMs) && policy.initialDelayMs >= 0)) fail('initialDelayMs', 'must be a non-negative number of milliseconds');
  if (!(Number.isFinite(policy.maxDelayMs) && policy.maxDelayMs >= 0)) fail('maxDelayMs', 'must be a non-negative number of milliseconds');
  if (policy.initialDelayMs > policy.maxDelayMs) fail('initialDelayMs', `must not exceed ${prefix}maxDelayMs`);
  if (!(Number.isFinite(policy.factor) && policy.factor >= 1)) fail('factor', 'must be a number of at least 1');
  if (!(policy.jitter >= 0 && policy.jitter <= 1)) fail('jitter', 'must be a fraction between 0 and 1');
  return policy;
}

/**
 * The wait before `attempt` (1 for the first retry): `initialDelayMs · factor^(attempt−1)`,
 * capped at `maxDelayMs` and rounded to whole ms, then shortened by up to `jitter` of itself
 * as `unit` (in [0, 1)) says. Jitter only ever shortens, so `maxDelayMs` stays a true bound.
 */
export function backoffDelay(policy: BackoffPolicy, attempt: number, unit: number): number {
  const base = Math.round(Math.min(policy.maxDelayMs, policy.initialDelayMs * policy.factor ** Math.max(0, attempt - 1)));
  const u = Math.min(Math.max(unit, 0), 1);
  return Math.round(base * (1 - policy.jitter * u));
}

/**
 * A number in [0, 1) derived from `parts` alone (FNV-1a over the parts, then a murmur3
 * finaliser so neighbouring inputs land far apart).
 *
 * Why a hash of stable inputs rather than `Math.random()` or an injected random source: a
 * backoff deadline is computed inside a state transition and stored in the snapshot, so it
 * must come out the same when a step is replayed (a fork, a test), with nothing extra to
 * persist, as a generator's state would be. Jitter exists to spread callers that failed at
 * the same moment; callers differ in their run id, agent or peer id, so hashing those (with
 * the attempt) spreads them just as well, and a test can reproduce any delay from its inputs.
 */
export function jitterUnit(...parts: ReadonlyArray<string | number>): number {
  let h = 0x811c9dc5;
  // The separator keeps ('ab', 'c') and ('a', 'bc') apart.
  for (const char of parts.join('\u0000')) {
    h ^= char.codePointAt(0)!;
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 4294967296;
}
