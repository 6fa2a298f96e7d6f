/**
 * The storage plug-in point: an ordered key-value store with atomic batches. LevelDB is the
 * embedded implementation (`troupe/storage/level`), Postgres the shared one
 * (`troupe/storage/postgres`); `memoryStorage` serves tests. All run the shared conformance
 * suite `storageConformance` of `troupe/testing` (testing/storage-conformance.ts).
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

/**
 * The right to execute one run, held by one owner at a time (see {@link Storage.claim}).
 * `epoch` grows by one with every claim of the run and is durable, so a claim taken later,
 * by any process, has a higher epoch than every claim before it.
 */
export interface RunClaim {
  readonly runId: string;
  /** Who holds it: a node's owner id (`<nodeId>.<instance>`), unique per node object. */
  readonly owner: string;
  readonly epoch: number;
}

/** Options of one batch. */
export interface WriteOptions {
  /**
   * Wait for the OS to flush to disk (fsync). Without it a write survives the process being
   * killed (it is in the OS page cache) but not a power loss.
   */
  sync?: boolean;
  /**
   * Claims the batch is written under. The storage checks them atomically with the write:
   * when any is no longer the current claim of its run the batch fails with `LEASE_LOST`,
   * writes nothing, and lists every such claim in the error's `details.lost` (so a caller
   * that merged several runs' batches can retry the others without them).
   */
  fence?: readonly RunClaim[];
}

/** An ordered key-value store with atomic multi-key batches. */
export interface Storage extends AsyncDisposable {
  readonly status: Status;
  /** Where the data lives (a directory, or `memory`), for messages. */
  readonly location: string;
  get(key: string): Promise<Uint8Array | undefined>;
  /** Applies all ops or none; none when a claim of `options.fence` is lost (`LEASE_LOST`). */
  write(ops: readonly StorageOp[], options?: WriteOptions): Promise<void>;
  /** Iterates entries in key order (or reverse) within `range`. */
  entries(range: KeyRange): AsyncIterable<[string, Uint8Array]>;
  /**
   * Claims the right to execute `runId` for `owner`: one live claim per run at a time, so
   * one node executes a run. Fails with `RUN_CLAIMED` (naming the holder) while another
   * live claim exists, even one of the same owner: claims are not reentrant. The new claim's
   * epoch is one above the last claim of the run ever made on this database (kept under
   * `claim:<runId>`), and every earlier claim of the run stops being current.
   *
   * What "live" means is the implementation's: embedded stores (LevelDB, memory) admit one
   * process, so a claim is live while the Storage object that granted it has not released
   * it, and one left on disk by a dead process is free to take. A shared database would
   * grant leases that expire when their owner stops renewing them.
   */
  claim(runId: string, owner: string): Promise<RunClaim>;
  /** Gives a claim up; a claim that is no longer current (or a closed storage) is a no-op. */
  release(claim: RunClaim): Promise<void>;
  /** Idempotent; waits for pending writes. */
  close(): Promise<void>;
  /**
   * Reclaims the space of deleted keys in `range` (the whole database without one), for a
   * storage that leaves tombstones behind until it compacts (LevelDB). Absent where space is
   * reclaimed by the database itself (memory, Postgres's autovacuum).
   */
  compact?(range?: KeyRange): Promise<void>;
  /**
   * Set by a storage many nodes share (Postgres): its claims are leases that expire unless
   * renewed, and any node may take the unfinished runs nobody holds. Absent on embedded
   * stores, whose runs are resumed by the one process that opens them.
   */
  readonly shared?: SharedRuns;
}

/**
 * What a storage shared by many nodes adds to {@link Storage}: leases and the runs free to
 * take. The storage renews the leases of the claims it granted (a heartbeat) until they are
 * released or it is closed.
 */
export interface SharedRuns {
  /** How long a lease lasts without renewal, in ms: a dead node's runs are free after at most this. */
  readonly leaseMs: number;
  /**
   * Claims, for `owner`, up to `limit` unfinished runs of the named crews that nobody holds
   * (never claimed, released, or whose lease expired), oldest first, passing over the runs
   * in `exclude` (ones the caller cannot serve) and runs waiting for a human (whoever
   * decides takes those) unless mail waits for them. Each returned claim is
   * one the caller now holds, exactly as if it came from {@link Storage.claim}; a run two
   * nodes ask for at once is given to one of them.
   */
  claimable(owner: string, crews: readonly string[], limit: number, exclude?: readonly string[]): Promise<RunClaim[]>;
  /**
   * Calls `listener` with claims granted here whose lease could not be renewed: another
   * owner took the run, or renewing failed for longer than the lease. Their next fenced
   * write fails with `LEASE_LOST`; the holder should stop those runs now. Returns the
   * unsubscribe function.
   */
  onLeaseLost(listener: (lost: readonly RunClaim[]) => void): () => void;
  /**
   * Calls `listener` when a run may have become free to take (a run was submitted, a lease
   * released). A hint only: a node also polls, as notifications can be missed.
   */
  onRunsAvailable(listener: () => void): () => void;
  /**
   * Calls `listener` with the run id of mail written for a run (a row of `inq:<run>:`,
   * core/layout.ts), once the write that holds it commits: the run's holder drains it, and a
   * run nobody holds becomes free to take (see {@link claimable}). A hint only, like
   * {@link onRunsAvailable}: a node also looks for waiting mail when it polls, which is all
   * it does on a shared storage without this.
   */
  onMail?(listener: (runId: string) => void): () => void;
}

/** The key holding the newest claim of a run (owner and epoch). */
export function claimKey(runId: string): string {
  return `claim:${runId}`;
}

/** Throws a `TypeError` unless every op is a put of bytes or a delete, each with a string key. */
export function assertOps(ops: readonly StorageOp[]): void {
  if (!Array.isArray(ops)) throw new TypeError('write(ops) takes an array of { type: "put", key, value: Uint8Array } and { type: "del", key }');
  for (const op of ops) {
    const valid =
      typeof op?.key === 'string' && op.key.length > 0 && (op.type === 'del' || (op.type === 'put' && op.value instanceof Uint8Array));
    if (!valid) throw new TypeError(`write(ops): every op must be { type: "put", key: non-empty string, value: Uint8Array } or { type: "del", key }, got ${describeOp(op)}`);
  }
}

function describeOp(op: unknown): string {
  if (typeof op !== 'object' || op === null) return String(op);
  const { type, key, value } = op as Record<string, unknown>;
  return `{ type: ${JSON.stringify(type)}, key: ${JSON.stringify(key)}, value: ${value instanceof Uint8Array ? 'Uint8Array' : typeof value} }`;
}

/**
 * What bounds the keys after a prefix: U+FFFF encodes to bytes greater than any other UTF-8
 * sequence Troupe's keys use (core/layout.ts keys are ASCII).
 */
export const KEY_END = '\uffff';

/** The range of every key that starts with `prefix`. */
export function prefixRange(prefix: string, options: Omit<KeyRange, 'gte' | 'lt'> = {}): KeyRange {
  return { ...options, gte: prefix, lt: `${prefix}${KEY_END}` };
}

/** Zero-padded decimal so numeric sequence numbers sort correctly as strings. */
export function seqKey(seq: number): string {
  return seq.toString().padStart(12, '0');
}
