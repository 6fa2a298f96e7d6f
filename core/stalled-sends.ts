import type { Clock } from './clock.js';
import type { Envelope } from './envelope.js';
import { ErrorCode, isTroupeError } from './errors.js';

/**
 * Backpressure from a full transport outbox onto a node's runs. A run hands its outgoing
 * mail to the node once the mail is durable in the run's own storage, and treats a refusal
 * as final (a dead letter); `OUTBOX_FULL` is not final, it only says the peer is behind. So
 * the run's mail for that peer queues here, in order, and is offered again with a growing
 * delay until the outbox takes it. Mail queued behind the first refusal waits too, so the
 * per-pair order a spawn-then-task relies on holds. When the node closes, queued sends are
 * left unsettled on purpose: the run still holds them as undelivered, and its next start
 * routes them again.
 */

/** Options of {@link createStalledSends}. */
export interface StalledSendsOptions {
  send(toNode: string, envelope: Envelope): Promise<void>;
  clock: Clock;
  /** False once the node is closing: nothing is offered again then. */
  running(): boolean;
  /** Delay bounds between offers. Defaults 50 ms and 2 s. */
  minDelayMs?: number;
  maxDelayMs?: number;
}

/** Sends for runs, with their waits on full outboxes. */
export interface StalledSends {
  send(toNode: string, envelope: Envelope): Promise<void>;
  /** How many sends wait for `toNode`. */
  waiting(toNode: string): number;
  close(): void;
}

interface Waiting {
  envelope: Envelope;
  resolve(): void;
  reject(error: unknown): void;
}

/** Creates the {@link StalledSends} of one node. */
export function createStalledSends(options: StalledSendsOptions): StalledSends {
  const min = options.minDelayMs ?? 50;
  const max = options.maxDelayMs ?? 2_000;
  const queues = new Map<string, { items: Waiting[]; delay: number; cancel?: () => void }>();
  let closed = false;

  const drain = async (toNode: string) => {
    const queue = queues.get(toNode)!;
    queue.cancel = undefined;
    while (queue.items.length > 0) {
      if (closed || !options.running()) return;
      const head = queue.items[0]!;
      try {
        await options.send(toNode, head.envelope);
      } catch (error) {
        if (isTroupeError(error, ErrorCode.OUTBOX_FULL)) {
          queue.delay = Math.min(max, queue.delay * 2);
          queue.cancel = options.clock.setTimer(() => void drain(toNode), queue.delay);
          return;
        }
        queue.items.shift();
        head.reject(error);
        continue;
      }
      queue.items.shift();
      head.resolve();
    }
    queues.delete(toNode);
  };

  const enqueue = (toNode: string, envelope: Envelope) =>
    new Promise<void>((resolve, reject) => {
      let queue = queues.get(toNode);
      if (!queue) {
        queues.set(toNode, (queue = { items: [], delay: min }));
        queue.cancel = options.clock.setTimer(() => void drain(toNode), min);
      }
      queue.items.push({ envelope, resolve, reject });
    });

  return {
    send(toNode, envelope) {
      if (queues.has(toNode)) return enqueue(toNode, envelope);
      return options.send(toNode, envelope).catch((error: unknown) => {
        if (!isTroupeError(error, ErrorCode.OUTBOX_FULL) || closed) throw error;
        return enqueue(toNode, envelope);
      });
    },
    waiting: (toNode) => queues.get(toNode)?.items.length ?? 0,
    close() {
      closed = true;
      for (const queue of queues.values()) queue.cancel?.();
    },
  };
}
