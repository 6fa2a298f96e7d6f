import { backoffDelay, checkBackoff, jitterUnit, type BackoffPolicy } from '../core/backoff.js';
import { isRetryable, type SerializedError } from '../core/errors.js';

/**
 * Erlang/Akka-style supervision of a crew's agents. When an agent fails its task the crew
 * (its parent) restarts it, or every agent, after a backoff, unless the agent failed too
 * often within the window: then the failure escalates to whoever asked for the work (the
 * manager of a hierarchical crew, or the crew itself, which ends the run).
 */
export interface SupervisionPolicy extends BackoffPolicy {
  /** `oneForOne`: restart the failed agent. `oneForAll`: reset every agent and start over. */
  strategy: 'oneForOne' | 'oneForAll';
  /** Restarts allowed within `withinMs` before escalating (restart intensity). Default 3. */
  maxRestarts: number;
  withinMs: number;
}

/** Defaults: one-for-one, 3 restarts a minute, 100 ms backoff doubling to 5 s, jitter 0.5. */
export const DEFAULT_SUPERVISION: SupervisionPolicy = {
  strategy: 'oneForOne',
  maxRestarts: 3,
  withinMs: 60_000,
  initialDelayMs: 100,
  maxDelayMs: 5_000,
  factor: 2,
  jitter: 0.5,
};

/** Resolves a partial policy; throws a `TypeError` when it breaks a rule. */
export function resolveSupervision(owner: string, partial: Partial<SupervisionPolicy> | undefined, base = DEFAULT_SUPERVISION): SupervisionPolicy {
  const policy = { ...base, ...partial };
  if (policy.strategy !== 'oneForOne' && policy.strategy !== 'oneForAll') throw new TypeError(`${owner}: supervision.strategy must be oneForOne or oneForAll`);
  if (!Number.isInteger(policy.maxRestarts) || policy.maxRestarts < 0) throw new TypeError(`${owner}: supervision.maxRestarts must be a non-negative integer`);
  return checkBackoff(owner, 'supervision.', policy);
}

/** A failure, kept in the crew's snapshot. */
export interface FailureRecord {
  agent: string;
  at: number;
  error: SerializedError;
  action: 'restart' | 'restartAll' | 'escalate';
}

/** What to do about one failure. */
export type SupervisionDecision = { action: 'restart' | 'restartAll'; delayMs: number; restarts: number[] } | { action: 'escalate'; reason: string };

/**
 * Decides on a failure given the timestamps of earlier restarts (of this agent for
 * one-for-one, of the crew for one-for-all). Pure, so the decision replays identically:
 * the restart delay's jitter is a hash of `key` (run and agent) and the restart count.
 */
export function supervise(policy: SupervisionPolicy, error: SerializedError, earlier: readonly number[], now: number, key = ''): SupervisionDecision {
  // A restart repeats the task; what cannot succeed on a retry cannot succeed on it either
  // (a 404, a missing route, an exhausted budget), so it escalates at once, saying why.
  if (!isRetryable(error)) return { action: 'escalate', reason: `${error.code ?? error.name} is not retryable, so a restart cannot fix it` };
  const recent = earlier.filter((t) => now - t < policy.withinMs);
  if (recent.length >= policy.maxRestarts) {
    return { action: 'escalate', reason: `restart intensity exceeded: ${recent.length} restarts within ${policy.withinMs} ms` };
  }
  // A restart repeats the call that asked us to wait (Retry-After): it waits at least that.
  const delayMs = Math.max(backoffDelay(policy, recent.length + 1, jitterUnit(key, recent.length + 1)), error.retryAfterMs ?? 0);
  return { action: policy.strategy === 'oneForAll' ? 'restartAll' : 'restart', delayMs, restarts: [...recent, now] };
}
