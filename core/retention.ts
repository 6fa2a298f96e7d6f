import { layout } from './layout.js';
import type { StorageOp } from './storage.js';

/**
 * Which checkpoints of a run stay readable (history, fork, time travel). The newest
 * `keepLast`, every `keepEvery`-th and the first are kept; the others are deleted as the run
 * goes on, with the actor records only they needed. Conversations, journal and ledger are
 * the run's content and stay: the database grows with what the run said and did, not with
 * steps times state.
 */
export interface RetentionPolicy {
  /** The newest checkpoints kept. Default 100. */
  keepLast: number;
  /** Also keep every checkpoint whose number is a multiple of this (0: none). Default 1000. */
  keepEvery: number;
}

/** The default {@link RetentionPolicy}. */
export const DEFAULT_RETENTION: RetentionPolicy = { keepLast: 100, keepEvery: 1000 };

/** Resolves a partial policy; throws a `TypeError` that states the rule. */
export function resolveRetention(partial: Partial<RetentionPolicy> | undefined): RetentionPolicy {
  const policy = { ...DEFAULT_RETENTION, ...partial };
  if (!Number.isInteger(policy.keepLast) || policy.keepLast < 1) throw new TypeError('retention.keepLast must be a positive integer (the newest checkpoint is always needed to resume)');
  if (!Number.isInteger(policy.keepEvery) || policy.keepEvery < 0) throw new TypeError('retention.keepEvery must be a non-negative integer (0 keeps none besides the newest)');
  return policy;
}

/** Whether checkpoint `c` is kept once checkpoint `newest` is written. */
export function isRetained(c: number, newest: number, policy: RetentionPolicy): boolean {
  return c === 1 || c > newest - policy.keepLast || (policy.keepEvery > 0 && c % policy.keepEvery === 0);
}

/**
 * The pruning of one run. It remembers which checkpoints wrote a record of which actor; an
 * actor's record written by checkpoint `v` serves every checkpoint up to its next record,
 * and is deleted once none of those is retained.
 */
export function createRetention(runId: string, policy: RetentionPolicy) {
  const versions = new Map<string, number[]>();
  // Only actors with more than one record can have one that is no longer needed.
  const several = new Set<string>();

  /** Whether a retained checkpoint other than `dropped` lies in [from, to). */
  const retainedIn = (from: number, to: number, dropped: number, newest: number) => {
    if (from <= 1 && 1 < to && dropped !== 1) return true;
    if (Math.max(from, newest - policy.keepLast + 1) < to) return true;
    if (policy.keepEvery > 0) {
      for (let c = Math.ceil(from / policy.keepEvery) * policy.keepEvery; c < to; c += policy.keepEvery) if (c !== dropped && c > 0) return true;
    }
    return false;
  };

  return {
    /** Checkpoint `seq` wrote a record of `actorId`. */
    wrote(actorId: string, seq: number): void {
      const list = versions.get(actorId);
      if (!list) versions.set(actorId, [seq]);
      else {
        if (list.at(-1) !== seq) list.push(seq);
        if (list.length > 1) several.add(actorId);
      }
    },

    /** The delete ops that checkpoint `newest` makes possible (to go in its batch). */
    prune(newest: number): StorageOp[] {
      const dropped = newest - policy.keepLast;
      if (dropped < 1 || isRetained(dropped, newest, policy)) return [];
      const ops: StorageOp[] = [{ type: 'del', key: layout.checkpoint(runId, dropped) }];
      for (const actorId of several) {
        const list = versions.get(actorId)!;
        let i = -1;
        for (let j = list.length - 1; j >= 0; j--) {
          if (list[j]! <= dropped) {
            i = j;
            break;
          }
        }
        if (i < 0 || i === list.length - 1) continue;
        if (retainedIn(list[i]!, list[i + 1]!, dropped, newest)) continue;
        ops.push({ type: 'del', key: layout.actor(runId, actorId, list[i]!) });
        list.splice(i, 1);
        if (list.length < 2) several.delete(actorId);
      }
      return ops;
    },
  };
}

/** The pruning type returned by {@link createRetention}. */
export type Retention = ReturnType<typeof createRetention>;
