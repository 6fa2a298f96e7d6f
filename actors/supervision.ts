import { isRetryable, type SerializedError } from '../core/errors.js';

/**
 * Erlang/Akka-style supervision of a crew's agents. When an agent fails its task the crew
 * (its parent) restarts it, or every agent, after a backoff, unless the agent failed too
 * often within the window: then the failure escalates to whoever asked for the work (the
 * manager of a hierarchical crew, or the crew itself, which ends the run).
 */
export interface SupervisionPolicy {
  /** `oneForOne`: restart the failed agent. `oneForAll`: reset every agent and start over. */
  strategy: 'oneForOne' | 'oneForAll';
  /** Restarts allowed within `withinMs` before escalating (restart intensity). Default 3. */
  maxRestarts: number;
  withinMs: number;
  initialDelayMs: number;
  maxDelayMs: number;
  factor: number;
}

/** Defaults: one-for-one, 3 restarts a minute, 100 ms backoff doubling to 5 s. */
export const DEFAULT_SUPERVISION: SupervisionPolicy = {
  strategy: 'oneForOne',
  maxRestarts: 3,
  withinMs: 60_000,
  initialDelayMs: 100,
  maxDelayMs: 5_000,
  factor: 2,
};

/** Resolves a partial policy; throws a `TypeError` when it breaks a rule. */
export function resolveSupervision(owner: string, partial: Partial<SupervisionPolicy> | undefined, base = DEFAULT_SUPERVISION): SupervisionPolicy {
  const policy = { ...base, ...partial };
  if (policy.strategy !== 'oneForOne' && policy.strategy !== 'oneForAll') throw new TypeError(`${owner}: supervision.strategy must be oneForOne or oneForAll`);
  if (!Number.isInteger(policy.maxRestarts) || policy.maxRestarts < 0) throw new TypeError(`${owner}: supervision.maxRestarts must be a non-negative integer`);
  if (policy.initialDelayMs > policy.maxDelayMs) throw new TypeError(`${owner}: supervision.initialDelayMs must not exceed maxDelayMs`);
  return policy;
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
 * one-for-one, of the crew for one-for-all). Pure, so the decision replays identically.
 */
export function supervise(policy: SupervisionPolicy, error: SerializedError, earlier: readonly number[], now: number): SupervisionDecision {
  // A restart repeats the task; what cannot succeed on a retry cannot succeed on it either
  // (a 404, a missing route, an exhausted budget), so it escalates at once, saying why.
  if (!isRetryable(error)) return { action: 'escalate', reason: `${error.code ?? error.name} is not retryable, so a restart cannot fix it` };
  const recent = earlier.filter((t) => now - t < policy.withinMs);
  if (recent.length >= policy.maxRestarts) {
    return { action: 'escalate', reason: `restart intensity exceeded: ${recent.length} restarts within ${policy.withinMs} ms` };
  }
  const delayMs = Math.min(policy.maxDelayMs, policy.initialDelayMs * policy.factor ** recent.length);
  return { action: policy.strategy === 'oneForAll' ? 'restartAll' : 'restart', delayMs, restarts: [...recent, now] };
}
