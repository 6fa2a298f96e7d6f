import type { Storage, StorageOp } from '../core/storage.js';

/**
 * The transport's writes to its storage, merged per turn: the batches its outbox and inbox
 * ask for in one turn of the event loop go to the storage as one atomic batch.
 *
 * Why: at a round trip's turn the asking side records the cursor of the answer it just
 * delivered and, in the same callback, the outbox entry of its next question. Issued apart,
 * they were two storage writes a turn (two fsyncs with `sync`); merged, one. One batch for
 * both is as durable as either, and atomic; their keys never overlap. (With sync off the
 * round trip's p50 did not move measurably on a 2-vCPU VM: the two writes had overlapped.)
 *
 * The batches wait for the end of the turn (`setImmediate`), not a microtask: which of the
 * two comes first in the microtask queue depends on how deep the awaits above each run, and
 * a microtask merged none of them in a test where it merged all of them in the benchmark.
 */
export interface TransportWrites {
  /** Resolves once `ops` are durable, with every batch merged with them (which fail with them). */
  write(ops: readonly StorageOp[]): Promise<void>;
}

interface Pending {
  ops: readonly StorageOp[];
  resolve(): void;
  reject(error: unknown): void;
}

/** Merges the unfenced writes of one turn into one `storage.write` with `sync`. */
export function createMergedWrites(storage: Pick<Storage, 'write'>, sync: boolean): TransportWrites {
  let pending: Pending[] = [];
  const flush = () => {
    const group = pending;
    pending = [];
    const ops = group.length === 1 ? group[0]!.ops : group.flatMap((g) => g.ops);
    const fail = (error: unknown) => {
      for (const g of group) g.reject(error);
    };
    let written: Promise<void>;
    try {
      written = storage.write(ops, { sync });
    } catch (error) {
      // A storage that throws instead of rejecting must not throw out of a timer callback.
      return fail(error);
    }
    written.then(() => {
      for (const g of group) g.resolve();
    }, fail);
  };
  return {
    write(ops) {
      return new Promise<void>((resolve, reject) => {
        if (pending.push({ ops, resolve, reject }) === 1) setImmediate(flush);
      });
    },
  };
}

/** Each batch its own `storage.write` with `sync`, at once: an outbox or inbox used on its own. */
export function directWrites(storage: Pick<Storage, 'write'>, sync: boolean): TransportWrites {
  return { write: (ops) => storage.write(ops, { sync }) };
}
