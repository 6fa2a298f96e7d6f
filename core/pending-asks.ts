import type { Clock } from './clock.js';
import type { Envelope } from './envelope.js';
import { ErrorCode, TroupeError } from './errors.js';

/**
 * The asks of one node that wait for their replies, by correlation id, each with its
 * timeout. A reply comes back to `_ask.<node>/<corr>` by whatever path (a local run, a peer,
 * a row of a shared database); one that finds nobody waiting (the ask timed out) is dropped.
 */
export interface PendingAsks {
  /** Resolves with the reply to `corr`, or rejects with `ASK_TIMEOUT` after `timeoutMs`. */
  wait(corr: string, timeoutMs: number, asked: { to: string; type: string }): Promise<Envelope>;
  /** Hands `reply` to the ask `corr` it answers, if one still waits. */
  answer(corr: string, reply: Envelope): void;
  /** Forgets `corr` without settling it (its question could not be sent). */
  cancel(corr: string): void;
  /** Rejects every ask still waiting with `reason` (the node closes). */
  rejectAll(reason: Error): void;
}

/** Creates the {@link PendingAsks} of a node, timed by `clock`. */
export function createPendingAsks(clock: Clock): PendingAsks {
  const waiting = new Map<string, { resolve(e: Envelope): void; reject(e: unknown): void; cancel(): void }>();
  return {
    wait(corr, timeoutMs, { to, type }) {
      return new Promise<Envelope>((resolve, reject) => {
        const cancel = clock.setTimer(() => {
          waiting.delete(corr);
          reject(new TroupeError(ErrorCode.ASK_TIMEOUT, `no reply from ${to} to "${type}" within ${timeoutMs} ms`, { details: { to, type, timeoutMs } }));
        }, timeoutMs);
        waiting.set(corr, { resolve, reject, cancel });
      });
    },
    answer(corr, reply) {
      const pending = waiting.get(corr);
      if (!pending) return;
      waiting.delete(corr);
      pending.cancel();
      pending.resolve(reply);
    },
    cancel(corr) {
      waiting.get(corr)?.cancel();
      waiting.delete(corr);
    },
    rejectAll(reason) {
      for (const pending of waiting.values()) {
        pending.cancel();
        pending.reject(reason);
      }
      waiting.clear();
    },
  };
}
