import { decode, decodeAll, encodeCompact } from './codec.js';
import { layout, seqOf } from './layout.js';
import type { Redactor } from './secrets.js';
import type { LogEntry, LogRef } from './snapshot-parts.js';
import type { Storage, StorageOp } from './storage.js';
import { put } from './run-store.js';

/**
 * How the append-only logs of a run (its conversations) are stored.
 *
 * A step writes each new entry once, under a key of its own: what a step costs stays what it
 * added. Reading a long conversation back entry by entry, though, costs a key per message:
 * 5,000 keys for a resume that otherwise reads a handful. So once a log has
 * {@link LOG_SEGMENT_ENTRIES} entries stored one by one, the batch that adds the last of them
 * also packs them into one segment value and deletes the single keys (like an LSM tree's
 * compaction, bounded: each entry is rewritten once). Segments hold the entry numbers they
 * pack, so a range of a log is the entries of its segments and singles with numbers in the
 * range, whatever the history of packing.
 */

/** Entries stored singly before they are packed into one segment. */
export const LOG_SEGMENT_ENTRIES = 256;

/** A packed segment: entry numbers and values, in entry order. */
interface Segment {
  n: number[];
  v: unknown[];
}

/** The entries of a log stored singly (not yet packed), oldest first. */
export type LogTails = Map<string, Array<{ n: number; value: unknown }>>;

/** The log writer of one run: puts new entries and packs full tails into segments. */
export function createLogWriter(options: { runId: string; redact: Redactor; segmentEntries?: number }) {
  const { runId, redact } = options;
  const size = options.segmentEntries ?? LOG_SEGMENT_ENTRIES;
  let tails: LogTails = new Map();
  return {
    /** The ops that store `entries`, the new log entries of one capture. */
    write(entries: readonly LogEntry[]): StorageOp[] {
      const ops: StorageOp[] = [];
      // Entry numbers are unique in a run, whatever the log.
      const inBatch = new Set(entries.map((e) => e.n));
      const packed = new Set<number>();
      for (const entry of entries) {
        const tail = tails.get(entry.log) ?? [];
        tail.push({ n: entry.n, value: entry.value });
        tails.set(entry.log, tail);
        if (tail.length < size) continue;
        const segment: Segment = { n: tail.map((e) => e.n), v: tail.map((e) => redact(e.value)) };
        ops.push({ type: 'put', key: layout.logSegment(runId, entry.log, entry.n), value: encodeCompact(segment) });
        for (const e of tail) {
          packed.add(e.n);
          // Entries of this very batch are never written singly.
          if (!inBatch.has(e.n)) ops.push({ type: 'del', key: layout.log(runId, entry.log, e.n) });
        }
        tails.delete(entry.log);
      }
      for (const entry of entries) if (!packed.has(entry.n)) ops.push(put(layout.log(runId, entry.log, entry.n), redact(entry.value)));
      return ops;
    },
    /** Continues after a restore with the singles the restore read. */
    seed(restored: LogTails): void {
      tails = new Map([...restored].map(([log, list]) => [log, [...list]]));
    },
    /**
     * Continues log `log`, read back after the restore, from its singles. Not once entries
     * of a newer range were written to it: the older singles then stay as they are, still
     * found by {@link readLogRange}, which reads singles whatever the history of packing.
     */
    seedLog(log: string, singles: ReadonlyArray<{ n: number; value: unknown }>): void {
      if (!tails.has(log) && singles.length > 0) tails.set(log, [...singles]);
    },
  };
}

/** The log writer type returned by {@link createLogWriter}. */
export type LogWriter = ReturnType<typeof createLogWriter>;

/**
 * Reads entries `ref.from` ≤ n < `ref.to` of a log: from the segments that hold any of them,
 * then the singles. `singles` are the entries of the range stored singly (the tail a writer
 * continues from). Damaged values throw; the caller reports whose they are.
 */
export async function readLogRange(storage: Storage, runId: string, ref: LogRef): Promise<{ values: unknown[]; singles: Array<{ n: number; value: unknown }> }> {
  const values: unknown[] = [];
  let lastPacked = -Infinity;
  for await (const [, raw] of storage.entries(layout.logSegmentsFrom(runId, ref.log, ref.from))) {
    const segment = decode(raw, Infinity) as Segment;
    if (!Array.isArray(segment?.n) || !Array.isArray(segment.v) || segment.n.length !== segment.v.length) throw new Error(`log segment of ${ref.log} is malformed`);
    if (segment.n[0]! >= ref.to) break;
    for (let i = 0; i < segment.n.length; i++) {
      const n = segment.n[i]!;
      if (n >= ref.from && n < ref.to) values.push(segment.v[i]);
      lastPacked = Math.max(lastPacked, n);
    }
  }
  // Singles come after the segments, and are read from there on: below lie the deleted
  // singles of every packed entry, which LevelDB would step over one by one until it
  // compacts them (milliseconds for a long conversation, more than the segments' read).
  const single = await collect(storage.entries(layout.logRange(runId, ref.log, Math.max(ref.from, lastPacked + 1), ref.to)));
  const decoded = decodeAll(single.raws);
  const singles = decoded.map((value, i) => ({ n: seqOf(single.keys[i]!), value }));
  for (const s of singles) values.push(s.value);
  return { values, singles };
}

async function collect(entries: AsyncIterable<[string, Uint8Array]>): Promise<{ keys: string[]; raws: Uint8Array[] }> {
  const keys: string[] = [];
  const raws: Uint8Array[] = [];
  for await (const [key, raw] of entries) {
    keys.push(key);
    raws.push(raw);
  }
  return { keys, raws };
}

/**
 * The ops that give run `to` the log entries of run `from` up to entry `logSeq` (a fork):
 * segments whose entries all precede it are copied, one that straddles it is unpacked.
 */
export async function forkLogOps(storage: Storage, from: string, to: string, logSeq: number): Promise<StorageOp[]> {
  const ops: StorageOp[] = [];
  for await (const [key, value] of storage.entries(layout.logs(from))) {
    if (seqOf(key) <= logSeq) ops.push({ type: 'put', key: key.replace(`:${from}:`, `:${to}:`), value });
  }
  for await (const [key, raw] of storage.entries(layout.logSegments(from))) {
    const [logId, last] = layout.parseLogSegment(from, key);
    if (last <= logSeq) {
      ops.push({ type: 'put', key: layout.logSegment(to, logId, last), value: raw });
      continue;
    }
    const segment = decode(raw, Infinity) as Segment;
    segment.n.forEach((n, i) => {
      if (n <= logSeq) ops.push(put(layout.log(to, logId, n), segment.v[i]));
    });
  }
  return ops;
}
