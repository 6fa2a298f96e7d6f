import { ErrorCode, isTroupeError } from './errors.js';
import type { RunClaim, Storage, StorageOp } from './storage.js';

/**
 * One ordered write path per node. Batches are applied in the order they were queued,
 * across all runs: the audit log's hash chain depends on records reaching disk in the order
 * they were chained. While a write is in flight, the batches queued behind it are merged
 * into one (group commit), so many busy runs cost few LevelDB writes.
 */
export interface WriteQueue {
  /**
   * Resolves once `ops` are durable (as durable as `sync` makes them). With `fence`, the
   * batch is written only while that claim is current; otherwise it fails with `LEASE_LOST`
   * and writes nothing, while the other runs' batches merged with it are still written.
   */
  write(ops: readonly StorageOp[], fence?: RunClaim): Promise<void>;
  /** Resolves when everything queued so far is written. */
  idle(): Promise<void>;
  /**
   * `undefined` while the bytes queued and in flight are below the queue's bound, else a
   * promise that resolves once they are: callers about to produce more (a model or tool
   * call) wait on it, so a burst of busy runs slows down instead of growing the heap without
   * limit. Synchronous when there is room, so it costs a step nothing in the common case.
   */
  room(): Promise<void> | undefined;
  readonly stats: { batches: number; writes: number; ops: number; queuedBytes: number; maxQueuedBytes: number };
}

/** Options of {@link createWriteQueue}. */
export interface WriteQueueOptions {
  sync: boolean;
  /** Bytes queued and in flight beyond which {@link WriteQueue.room} waits. Default 64 MiB. */
  maxQueuedBytes?: number;
}

/** The default bound of a node's write queue. */
export const DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024;

const bytesOf = (ops: readonly StorageOp[]) => ops.reduce((n, op) => n + op.key.length + (op.type === 'put' ? op.value.byteLength : 0), 0);

interface Queued {
  ops: readonly StorageOp[];
  bytes: number;
  fence: RunClaim | undefined;
  resolve(): void;
  reject(error: unknown): void;
}

const sameClaim = (a: RunClaim, b: RunClaim) => a.runId === b.runId && a.owner === b.owner && a.epoch === b.epoch;

/** Creates the write queue of `storage`. */
export function createWriteQueue(storage: Storage, options: WriteQueueOptions): WriteQueue {
  const limit = options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
  let pending: Queued[] = [];
  let running: Promise<void> | undefined;
  let waiting: Array<() => void> = [];
  const stats = { batches: 0, writes: 0, ops: 0, queuedBytes: 0, maxQueuedBytes: 0 };
  const settled = (g: Queued) => {
    stats.queuedBytes -= g.bytes;
    if (stats.queuedBytes < limit && waiting.length > 0) {
      const wake = waiting;
      waiting = [];
      for (const fn of wake) fn();
    }
  };

  /**
   * Writes a merged group under the fences of all its batches. The storage checks them
   * atomically with the write and names every lost claim; the batches fenced by those are
   * rejected and the rest written again, merged. This keeps group commit whole in the common
   * case (no claim lost: one write, as before) and needs nothing beyond `write` from the
   * storage, where asking "is this claim current?" before writing would be a race on a
   * shared database: a claim can be lost between that answer and the write.
   */
  const writeGroup = async (group: Queued[]) => {
    while (group.length > 0) {
      const ops = group.flatMap((g) => g.ops);
      const fence = group.flatMap((g) => (g.fence ? [g.fence] : []));
      stats.writes += 1;
      stats.ops += ops.length;
      try {
        await storage.write(ops, { sync: options.sync, ...(fence.length > 0 ? { fence } : {}) });
        for (const g of group) {
          settled(g);
          g.resolve();
        }
        return;
      } catch (error) {
        const lost = isTroupeError(error, ErrorCode.LEASE_LOST) ? (error.details.lost as RunClaim[] | undefined) : undefined;
        const stale = lost ? group.filter((g) => g.fence && lost.some((l) => sameClaim(l, g.fence!))) : [];
        // Any other failure (or a LEASE_LOST that names none of ours) fails the whole group.
        const failed = stale.length > 0 ? stale : group;
        for (const g of failed) {
          settled(g);
          g.reject(error);
        }
        group = group.filter((g) => !failed.includes(g));
      }
    }
  };

  const drain = async () => {
    while (pending.length > 0) {
      const group = pending;
      pending = [];
      await writeGroup(group);
    }
    running = undefined;
  };

  return {
    stats,
    write(ops, fence) {
      stats.batches += 1;
      const bytes = bytesOf(ops);
      stats.queuedBytes += bytes;
      stats.maxQueuedBytes = Math.max(stats.maxQueuedBytes, stats.queuedBytes);
      const done = new Promise<void>((resolve, reject) => pending.push({ ops, bytes, fence, resolve, reject }));
      running ??= drain();
      return done;
    },
    async idle() {
      while (running) await running;
    },
    room() {
      return stats.queuedBytes < limit ? undefined : new Promise<void>((resolve) => waiting.push(resolve));
    },
  };
}
