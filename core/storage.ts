/**
 * The storage plug-in point: an ordered key-value store with atomic batches. LevelDB is the
 * production implementation (`troupe/storage/level`); `memoryStorage` serves tests. Both run
 * the shared conformance suite in `test/storage-conformance.ts`.
 */

/** Lifecycle of a long-lived object. */
export type Status = 'opening' | 'open' | 'closing' | 'closed';

/** One write inside an atomic batch. */
export type StorageOp = { type: 'put'; key: string; value: Uint8Array } | { type: 'del'; key: string };

/** A key range: `gte` inclusive, `lt` exclusive; keys compare as UTF-8 byte strings. */
export interface KeyRange {
  gte?: string;
  lt?: string;
  reverse?: boolean;
  limit?: number;
}

/** Options of one batch. */
export interface WriteOptions {
  /**
   * Wait for the OS to flush to disk (fsync). Without it a write survives the process being
   * killed (it is in the OS page cache) but not a power loss.
   */
  sync?: boolean;
}

/** An ordered key-value store with atomic multi-key batches. */
export interface Storage extends AsyncDisposable {
  readonly status: Status;
  /** Where the data lives (a directory, or `memory`), for messages. */
  readonly location: string;
  get(key: string): Promise<Uint8Array | undefined>;
  /** Applies all ops or none. */
  write(ops: readonly StorageOp[], options?: WriteOptions): Promise<void>;
  /** Iterates entries in key order (or reverse) within `range`. */
  entries(range: KeyRange): AsyncIterable<[string, Uint8Array]>;
  /** Idempotent; waits for pending writes. */
  close(): Promise<void>;
}

/** The range of every key that starts with `prefix`. */
export function prefixRange(prefix: string, options: Omit<KeyRange, 'gte' | 'lt'> = {}): KeyRange {
  // U+FFFF encodes to bytes greater than any other UTF-8 sequence we use in keys.
  return { ...options, gte: prefix, lt: `${prefix}\uffff` };
}

/** Zero-padded decimal so numeric sequence numbers sort correctly as strings. */
export function seqKey(seq: number): string {
  return seq.toString().padStart(12, '0');
}
