/**
 * Compaction triggered by deletes, for an LSM store (LevelDB) that reclaims a deleted key's
 * space only when a compaction happens to reach it, and size-triggered compactions of a
 * database that mostly replaces and deletes keys reach them late. A run that deletes what
 * retention no longer needs (old manifests and actor records, two or three keys a step),
 * acknowledged outbox groups or drained mail rows leaves tombstones behind: a 2,500-step
 * run's directory went from 10.5 to 4.7 MB when compacted whole, and a reverse seek for an
 * actor's newest record skipped the tombstones of its older ones (1.2–1.9 ms instead of
 * 0.2 ms, on every resume). RocksDB ships the same idea as its `CompactOnDeletionCollector`.
 *
 * Deletes are counted per key group: the key up to its second `:` (`actor:<run>:`,
 * `ckpt:<run>:`, `outbox:<node>:`; core/layout.ts puts the run or node there). A group that
 * saw {@link DeletionCompactionOptions.threshold} deletes has the range between the least
 * and greatest key deleted compacted, off the write path, one range at a time.
 * @module
 */
import type { StorageOp } from '../core/storage.js';

/** Options of {@link createDeletionCompaction}. */
export interface DeletionCompactionOptions {
  /** Deletes in one key group that make its range worth compacting; 0 never compacts. */
  threshold: number;
  /** Compacts every key in [first, last] (both included). */
  compact(first: string, last: string): Promise<void>;
}

/** Groups tracked at once: beyond it the counts start again (losing a count only delays a compaction). */
const MAX_GROUPS = 4096;

interface Group {
  deletes: number;
  first: string;
  last: string;
}

/** The key group of `key`: up to and including its second `:`, or the whole key. */
export function deletionGroupOf(key: string): string {
  const first = key.indexOf(':');
  if (first < 0) return key;
  const second = key.indexOf(':', first + 1);
  return second < 0 ? key : key.slice(0, second + 1);
}

/** Counts the deletes of committed batches and compacts the ranges that collected many. */
export function createDeletionCompaction(options: DeletionCompactionOptions) {
  const groups = new Map<string, Group>();
  const due: Array<{ first: string; last: string }> = [];
  let running: Promise<void> | undefined;
  let stopped = false;
  let compactions = 0;

  const run = () => {
    if (running || stopped || due.length === 0) return;
    running = (async () => {
      while (due.length > 0 && !stopped) {
        const { first, last } = due.shift()!;
        // A failed compaction changes nothing on disk; a damaged table it met makes the next
        // write fail with the storage's own error, which is where a caller sees it.
        await options.compact(first, last).catch(() => {});
        compactions++;
      }
    })().finally(() => {
      running = undefined;
      run();
    });
  };

  return {
    /** A batch holding `ops` was written. */
    committed(ops: readonly StorageOp[]): void {
      if (options.threshold <= 0 || stopped) return;
      for (const op of ops) {
        if (op.type !== 'del') continue;
        const name = deletionGroupOf(op.key);
        let group = groups.get(name);
        if (!group) {
          if (groups.size >= MAX_GROUPS) groups.clear();
          groups.set(name, (group = { deletes: 0, first: op.key, last: op.key }));
        }
        group.deletes++;
        if (op.key < group.first) group.first = op.key;
        if (op.key > group.last) group.last = op.key;
        if (group.deletes >= options.threshold) {
          groups.delete(name);
          due.push({ first: group.first, last: group.last });
        }
      }
      run();
    },
    /** Compactions done so far. */
    get compactions() {
      return compactions;
    },
    /** Resolves once no compaction runs or waits. */
    async idle(): Promise<void> {
      while (running) await running;
    },
    /** Starts no more compactions and waits for the one running (before the database closes). */
    async stop(): Promise<void> {
      stopped = true;
      due.length = 0;
      await running;
    },
  };
}
