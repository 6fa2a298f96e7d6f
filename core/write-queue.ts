import type { Storage, StorageOp } from './storage.js';

/**
 * One ordered write path per node. Batches are applied in the order they were queued,
 * across all runs: the audit log's hash chain depends on records reaching disk in the order
 * they were chained. While a write is in flight, the batches queued behind it are merged
 * into one (group commit), so many busy runs cost few LevelDB writes.
 */
export interface WriteQueue {
  /** Resolves once `ops` are durable (as durable as `sync` makes them). */
  write(ops: readonly StorageOp[]): Promise<void>;
  /** Resolves when everything queued so far is written. */
  idle(): Promise<void>;
  readonly stats: { batches: number; writes: number; ops: number };
}

/** Creates the write queue of `storage`. */
export function createWriteQueue(storage: Storage, options: { sync: boolean }): WriteQueue {
  let pending: Array<{ ops: readonly StorageOp[]; resolve(): void; reject(error: unknown): void }> = [];
  let running: Promise<void> | undefined;
  const stats = { batches: 0, writes: 0, ops: 0 };

  const drain = async () => {
    while (pending.length > 0) {
      const group = pending;
      pending = [];
      const ops = group.flatMap((g) => g.ops);
      stats.writes += 1;
      stats.ops += ops.length;
      try {
        await storage.write(ops, { sync: options.sync });
        for (const g of group) g.resolve();
      } catch (error) {
        for (const g of group) g.reject(error);
      }
    }
    running = undefined;
  };

  return {
    stats,
    write(ops) {
      stats.batches += 1;
      const done = new Promise<void>((resolve, reject) => pending.push({ ops, resolve, reject }));
      running ??= drain();
      return done;
    },
    async idle() {
      while (running) await running;
    },
  };
}
