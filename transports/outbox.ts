import { randomBytes } from 'node:crypto';
import { decode, encode, encodeByteArray } from '../core/codec.js';
import { ErrorCode, TroupeError } from '../core/errors.js';
import { layout } from '../core/layout.js';
import type { Storage, StorageOp } from '../core/storage.js';
import type { OutboxReservation as CoreReservation } from '../core/transport.js';
import { directWrites, type TransportWrites } from './merged-writes.js';

/**
 * The sender's side of the durable sequence protocol between two nodes, on a {@link Storage}
 * (the receiver's is transports/inbox.ts). Its keys are built in core/layout.ts
 * (`layout.transport`): an envelope is written before its `send` resolves, under a key of
 * its own when a run's batch wrote it (a reservation), or with the other envelopes of its
 * group commit under one key (`outbox:<toNode>:<first>..<last>`): a flush of thousands of
 * sends was mostly the storage's per-key cost, and so was deleting them. A key is deleted
 * once its last envelope is acknowledged. `outseq:<toNode>` keeps numbering from restarting
 * when the outbox empties; `transport:epoch` names this storage's outbox incarnation.
 */

/** The transport's keys (core/layout.ts owns them; kept here under their earlier name). */
export const transportKeys = layout.transport;

/** A durable, unacknowledged envelope. */
export interface OutboxEntry {
  readonly seq: number;
  readonly bytes: Uint8Array;
}

/**
 * Most envelopes, and bytes, one group key holds: large enough that the per-key cost
 * vanishes, small enough that a partly acknowledged group re-sent after a restart is cheap.
 */
const GROUP_MAX_ENTRIES = 256;
const GROUP_MAX_BYTES = 256 * 1024;

/** An entry as the outbox holds it: `release` is the key its acknowledgement deletes, if any. */
interface Held extends OutboxEntry {
  release?: string;
}

interface Waiter {
  seq: number;
  resolve(): void;
  reject(error: unknown): void;
}

interface RoomWaiter {
  bytes: Uint8Array;
  resolve(): void;
  reject(error: unknown): void;
  cancel?: () => void;
}

interface Destination {
  assigned: number;
  durable: number;
  acked: number;
  /**
   * Durable entries that may be sent: every seq below the oldest reservation still open.
   * Those before `head` are acknowledged, dropped in bulk once they are many (an ack per
   * frame shifting the whole list made a burst of sends quadratic).
   */
  entries: Held[];
  head: number;
  /** Durable entries behind an open reservation, in seq order: sent once it settles. */
  parked: Held[];
  /**
   * The first seq of each slice holding appends to this destination that are not yet
   * durable (queued or being written), oldest first. A reservation committed meanwhile is
   * numbered after them and waits for them: sent first, it would reach the receiver ahead
   * of a lower seq, which the receiver would then drop as already seen.
   */
  unwritten: number[];
  /** Seqs reserved for a caller's batch that is not yet durable (see {@link Outbox.reserve}). */
  reserved: Set<number>;
  /** Highest seq durable through an append or a committed reservation, and the `outseq` written. */
  high: number;
  highWritten: number;
  waiters: Waiter[];
  /** Entries admitted and not yet acknowledged (durable or still being written), and their bytes. */
  held: number;
  heldBytes: number;
  /** Sends waiting for room, in the order they were made. */
  queued: RoomWaiter[];
}

interface Append {
  to: string;
  entry: Held;
}

/** Appends one write takes, and the promise their sends share. */
interface Slice {
  items: Append[];
  bytes: number;
  /** Destinations with appends in this slice (each has its first seq in {@link Destination.unwritten}). */
  to: Set<string>;
  done: Promise<void>;
  resolve(): void;
  reject(error: unknown): void;
}

function newSlice(): Slice {
  let resolve!: () => void;
  let reject!: (error: unknown) => void;
  const done = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
  return { items: [], bytes: 0, to: new Set(), done, resolve, reject };
}

/** The sender's side: numbered envelopes per destination, kept until acknowledged. */
export interface Outbox {
  readonly epoch: string;
  /**
   * Persists an encoded envelope for `to`, numbered now (see {@link Outbox.durable}); resolves
   * once durable (group-committed), with the promise every append of the same write shares.
   * When `to` already holds its limit of unacknowledged entries or bytes, waits up to
   * `waitMs` for acknowledgements to make room, then rejects with `OUTBOX_FULL` (retryable).
   */
  append(to: string, bytes: Uint8Array): Promise<void>;
  /**
   * Numbers an encoded envelope for `to` now and hands back the write of its entry, for the
   * caller to put in its own atomic batch (a run's checkpoint): one durable write for both.
   * `commit()` once that batch is durable, `abort()` if it failed. Until it settles, entries
   * numbered after it wait, so the receiver sees the pair's order. `undefined` when `to` has
   * no room or sends already wait for it (the caller then persists and `append`s itself).
   */
  reserve(to: string, bytes: Uint8Array): OutboxReservation | undefined;
  /** Unacknowledged entries and bytes held for `to`, written or being written. */
  held(to: string): { entries: number; bytes: number };
  /** Durable, unacknowledged entries for `to`, oldest first (a copy). */
  unacked(to: string): readonly OutboxEntry[];
  /**
   * What a sender sends next to `to`: the outbox's own list of durable entries (do not
   * mutate or keep it) and the index of the first one with a seq above `after`. No copy: a
   * pump runs once per tick with tens of thousands of entries held.
   */
  sendable(to: string, after: number): { entries: readonly OutboxEntry[]; from: number };
  /** Highest durable seq for `to` (an ack beyond it is a lie). */
  durable(to: string): number;
  /** Highest acknowledged seq for `to`. */
  ackedUpTo(to: string): number;
  /** Forgets entries up to `upTo` (memory now, storage in the next batch). */
  ack(to: string, upTo: number): void;
  /** Resolves once `to` acknowledged `seq`. */
  acked(to: string, seq: number): Promise<void>;
  /** Resolves once `to` acknowledged everything assigned so far. */
  flushed(to: string): Promise<void>;
  /** Every destination with state in this outbox. */
  destinations(): string[];
  /** Refuses new appends, waits for pending writes, then rejects every waiter with `reason`. */
  close(reason: Error): Promise<void>;
}

/** An entry numbered by {@link Outbox.reserve}: core's {@link CoreReservation} with its seq. */
export interface OutboxReservation extends CoreReservation {
  readonly seq: number;
}

/** Options of {@link createOutbox}. */
export interface OutboxOptions {
  storage: Storage;
  /** fsync each batch. */
  sync: boolean;
  /** Called after entries for `to` became durable (and sendable). */
  onDurable(to: string): void;
  /** Most unacknowledged entries per destination. Default {@link DEFAULT_OUTBOX_LIMITS}. */
  maxEntries?: number;
  /** Most unacknowledged envelope bytes per destination. */
  maxBytes?: number;
  /**
   * How long an append waits for room when its destination is full before it fails with
   * `OUTBOX_FULL`; 0 fails at once.
   */
  waitMs?: number;
  /** Timers for `waitMs` (the transport's clock). */
  setTimer?: (fn: () => void, ms: number) => () => void;
  /** The writes it shares with the inbox (merged per turn); default: its own to `storage`. */
  writes?: TransportWrites;
}

/**
 * Most appends, and envelope bytes, one outbox write takes. A burst of sends is written in
 * slices of this size, one after another: the first slice is sent while the next one is
 * written, instead of the whole burst waiting for one large write (and the receiver idling).
 */
const FLUSH_MAX_ENTRIES = 1024;
const FLUSH_MAX_BYTES = 1024 * 1024;

/** How long deletes of acknowledged entries wait for an append to ride with, and how many may wait. */
const DELETE_DELAY_MS = 25;
const DELETE_BATCH = 4096;

/** Default bounds of one destination's outbox: what a peer that is down may accumulate. */
export const DEFAULT_OUTBOX_LIMITS = { maxEntries: 10_000, maxBytes: 64 * 1024 * 1024, waitMs: 0 } as const;

/** Opens the outbox on `options.storage`, loading unacknowledged entries left by a previous process. */
export async function createOutbox(options: OutboxOptions): Promise<Outbox> {
  const { storage, sync } = options;
  let epoch: string;
  const stored = await storage.get(transportKeys.epoch);
  if (stored) epoch = decode(stored, Infinity) as string;
  else {
    epoch = randomBytes(16).toString('hex');
    await storage.write([{ type: 'put', key: transportKeys.epoch, value: encode(epoch) }], { sync: true });
  }
  const { write } = options.writes ?? directWrites(storage, sync);
  const dests = new Map<string, Destination>();
  const maxEntries = options.maxEntries ?? DEFAULT_OUTBOX_LIMITS.maxEntries;
  const maxBytes = options.maxBytes ?? DEFAULT_OUTBOX_LIMITS.maxBytes;
  const waitMs = options.waitMs ?? DEFAULT_OUTBOX_LIMITS.waitMs;
  const setTimer = options.setTimer ?? ((fn: () => void, ms: number) => {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  });
  const dest = (to: string) => {
    let d = dests.get(to);
    if (!d) dests.set(to, (d = { assigned: 0, durable: 0, acked: 0, entries: [], head: 0, parked: [], unwritten: [], reserved: new Set(), high: 0, highWritten: 0, waiters: [], held: 0, heldBytes: 0, queued: [] }));
    return d;
  };
  for await (const [key, value] of storage.entries(transportKeys.outseqs())) {
    const d = dest(transportKeys.outseqNodeOf(key));
    d.assigned = d.durable = d.acked = d.high = d.highWritten = decode(value, Infinity) as number;
  }
  for await (const [key, value] of storage.entries(transportKeys.outboxes())) {
    const { toNode, first, last } = transportKeys.parseOutbox(key);
    const d = dest(toNode);
    if (key === transportKeys.outbox(toNode, first)) {
      d.entries.push({ seq: first, bytes: value, release: key });
      continue;
    }
    const group = decode(value, Infinity);
    if (!Array.isArray(group) || group.length !== last - first + 1 || !group.every((b) => b instanceof Uint8Array)) {
      throw new TroupeError(ErrorCode.STORAGE_CORRUPT, `outbox entry ${key} in ${storage.location} is not the group of envelopes its key names`, { details: { key } });
    }
    group.forEach((bytes: Uint8Array, i) => d.entries.push({ seq: first + i, bytes, ...(i === group.length - 1 ? { release: key } : {}) }));
  }
  for (const d of dests.values()) {
    // Keys sort by their first seq; a single entry written by a run's batch can sit among groups.
    d.entries.sort((a, b) => a.seq - b.seq);
    if (d.entries.length > 0) d.acked = Math.min(d.acked, d.entries[0]!.seq - 1);
    // An entry a run's batch wrote can be newer than the last `outseq` (the outbox writes
    // that after the batch): numbering continues after whichever is higher.
    const last = d.entries.at(-1)?.seq ?? 0;
    d.assigned = Math.max(d.assigned, last);
    d.durable = Math.max(d.durable, last);
    d.high = Math.max(d.high, last);
    d.held = d.entries.length;
    d.heldBytes = d.entries.reduce((sum, e) => sum + e.bytes.byteLength, 0);
  }

  // Appends waiting for their write, in slices of what one write takes, each slice with the
  // promise its sends share: a burst of sends holds one promise per write, not one per send.
  let slices: Slice[] = [];
  let deletes: string[] = [];
  let writing: Promise<void> | undefined;
  let scheduled = false;
  let closed: Error | undefined;

  // Deleting acknowledged entries can wait: they ride with the next append's batch, or go
  // on their own after a moment. Written at once, they were a second write per round trip
  // competing with the next envelope's (a crash before they are written only resends what
  // the receiver drops as duplicates).
  let deletesDue = false;
  let cancelDeletes: (() => void) | undefined;
  const deleteLater = () => {
    if (deletes.length >= DELETE_BATCH) {
      deletesDue = true;
      return schedule();
    }
    if (cancelDeletes || closed) return;
    cancelDeletes = setTimer(() => {
      cancelDeletes = undefined;
      deletesDue = true;
      schedule();
    }, DELETE_DELAY_MS);
  };

  // Group commit: everything appended or acknowledged while a batch is being written goes
  // into the next one, so there is one write in flight and durability follows seq order.
  const schedule = () => {
    if (scheduled || writing) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      startWrite();
    });
  };

  // When a write completes, the next one is started before the envelopes it made durable
  // are announced: the storage then writes the next slice on its own thread while this one
  // encodes and sends the frames of the last (announcing first left the storage idle for
  // as long as a slice's frames took, between every two writes of a burst).
  const startWrite = () => {
    const due = slices.length > 0 || (deletes.length > 0 && (deletesDue || closed !== undefined));
    if (writing || !due) return;
    writing = flush().then((announce) => {
      writing = undefined;
      startWrite();
      announce?.();
    });
  };

  /** Writes the next slice (and the deletes due); resolves with what announces it, or nothing if the write failed. */
  const flush = async (): Promise<(() => void) | undefined> => {
    const slice = slices.shift();
    const batch = slice?.items ?? [];
    const dels = deletes;
    deletes = [];
    deletesDue = false;
    cancelDeletes?.();
    cancelDeletes = undefined;
    const ops: StorageOp[] = dels.map((key) => ({ type: 'del', key }));
    const highest = new Map<string, number>();
    // Appends to one destination are numbered in the order they were queued, so they
    // split into runs of consecutive seqs: one key each, up to the group bounds.
    const byDest = new Map<string, Append[]>();
    for (const a of batch) {
      let list = byDest.get(a.to);
      if (!list) byDest.set(a.to, (list = []));
      list.push(a);
      highest.set(a.to, Math.max(highest.get(a.to) ?? 0, a.entry.seq));
    }
    for (const [to, list] of byDest) {
      for (let i = 0; i < list.length; ) {
        let j = i + 1;
        let bytes = list[i]!.entry.bytes.byteLength;
        while (j < list.length && j - i < GROUP_MAX_ENTRIES && list[j]!.entry.seq === list[j - 1]!.entry.seq + 1 && bytes + list[j]!.entry.bytes.byteLength <= GROUP_MAX_BYTES) {
          bytes += list[j++]!.entry.bytes.byteLength;
        }
        const first = list[i]!.entry;
        const last = list[j - 1]!.entry;
        const key = j - i === 1 ? transportKeys.outbox(to, first.seq) : transportKeys.outboxGroup(to, first.seq, last.seq);
        ops.push({ type: 'put', key, value: j - i === 1 ? first.bytes : encodeByteArray(list.slice(i, j).map((a) => a.entry.bytes)) });
        last.release = key;
        i = j;
      }
    }
    // `outseq` never goes back, and covers committed reservations before their entries can be
    // acknowledged and deleted: a restart then never numbers a new envelope with a used seq.
    // What this batch writes is fixed now: a reservation committed during the write raises
    // `high` for the next batch, never what counts as written.
    const raised = new Map<string, number>();
    for (const [to, d] of dests) {
      const high = Math.max(d.high, highest.get(to) ?? 0);
      if (high > d.highWritten) raised.set(to, high);
    }
    for (const [to, high] of raised) ops.push({ type: 'put', key: transportKeys.outseq(to), value: encode(high) });
    try {
      await write(ops);
    } catch (cause) {
      // An outbox that cannot persist must refuse further sends rather than run ahead of
      // its durable state (a gap in flushed() would never resolve). Unsent deletes are
      // harmless: the receiver drops what it already has.
      const error = new TroupeError(ErrorCode.STORAGE_FAILED, `outbox write to ${storage.location} failed: ${(cause as Error)?.message ?? String(cause)}`, { cause });
      closed ??= error;
      slice?.reject(error);
      for (const rest of slices) rest.reject(error);
      slices = [];
      rejectWaiters(closed);
      return undefined;
    }
    for (const [to, high] of raised) {
      const d = dest(to);
      d.highWritten = Math.max(d.highWritten, high);
      d.high = Math.max(d.high, high);
    }
    // Slices are written in the order they were filled: what this one put in `unwritten` is
    // the oldest there. (A failed write leaves it: nothing numbered after it is sent by this process.)
    for (const to of slice?.to ?? []) dest(to).unwritten.shift();
    // Parked one by one, promoted once per destination: a reservation scan and a splice per
    // entry of a burst were most of the outbox's time after each write.
    for (const a of batch) park(dest(a.to), a.entry);
    for (const to of highest.keys()) promote(dest(to));
    return () => {
      slice?.resolve();
      for (const to of highest.keys()) options.onDurable(to);
    };
  };

  /** A durable entry, parked in seq order ({@link promote} makes it sendable), or dropped if already acknowledged. */
  const park = (d: Destination, entry: Held) => {
    if (entry.seq <= d.acked) {
      d.held--;
      d.heldBytes -= entry.bytes.byteLength;
      if (entry.release) (deletes.push(entry.release), deleteLater());
      return;
    }
    let i = d.parked.length;
    while (i > 0 && d.parked[i - 1]!.seq > entry.seq) i--;
    if (i === d.parked.length) d.parked.push(entry);
    else d.parked.splice(i, 0, entry);
  };

  /** A durable entry: sendable, unless a reservation numbered before it is still open. */
  const durable = (d: Destination, entry: Held) => {
    park(d, entry);
    promote(d);
  };

  const promote = (d: Destination) => {
    const oldest = Math.min(d.reserved.size > 0 ? Math.min(...d.reserved) : Infinity, d.unwritten[0] ?? Infinity);
    let n = 0;
    while (n < d.parked.length && d.parked[n]!.seq < oldest) n++;
    if (n === 0) return;
    for (let k = 0; k < n; k++) d.entries.push(d.parked[k]!);
    d.durable = Math.max(d.durable, d.parked[n - 1]!.seq);
    if (n === d.parked.length) d.parked = [];
    else d.parked.splice(0, n);
  };

  const rejectWaiters = (reason: Error) => {
    for (const d of dests.values()) {
      for (const w of d.waiters) w.reject(reason);
      d.waiters = [];
      for (const q of d.queued) {
        q.cancel?.();
        q.reject(reason);
      }
      d.queued = [];
    }
  };

  const fits = (d: Destination, bytes: number) => d.held === 0 || (d.held + 1 <= maxEntries && d.heldBytes + bytes <= maxBytes);

  // Numbered only when admitted, so seq order is the order sends got room in.
  const admit = (to: string, d: Destination, bytes: Uint8Array) => {
    d.held++;
    d.heldBytes += bytes.byteLength;
    const entry: Held = { seq: ++d.assigned, bytes };
    let slice = slices.at(-1);
    if (!slice || slice.items.length >= FLUSH_MAX_ENTRIES || (slice.items.length > 0 && slice.bytes + bytes.byteLength > FLUSH_MAX_BYTES)) slices.push((slice = newSlice()));
    if (!slice.to.has(to)) {
      slice.to.add(to);
      d.unwritten.push(entry.seq);
    }
    slice.items.push({ to, entry });
    slice.bytes += bytes.byteLength;
    schedule();
    return slice.done;
  };

  const full = (to: string, d: Destination, bytes: number) =>
    new TroupeError(ErrorCode.OUTBOX_FULL, `the outbox for node "${to}" is full (${d.held} envelopes, ${d.heldBytes} bytes unacknowledged; limits ${maxEntries} and ${maxBytes})`, {
      retryable: true,
      details: { node: to, entries: d.held, bytes: d.heldBytes, maxEntries, maxBytes, size: bytes, waitedMs: waitMs },
    });

  const makeRoom = (to: string, d: Destination) => {
    while (d.queued.length > 0 && !closed && fits(d, d.queued[0]!.bytes.byteLength)) {
      const q = d.queued.shift()!;
      q.cancel?.();
      admit(to, d, q.bytes).then(q.resolve, q.reject);
    }
  };

  const settle = (d: Destination) => {
    if (d.waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of d.waiters) (w.seq <= d.acked ? w.resolve() : still.push(w));
    d.waiters = still;
  };

  const wait = (to: string, seq: number) => {
    if (closed) return Promise.reject(closed);
    const d = dest(to);
    if (seq <= d.acked) return Promise.resolve();
    return new Promise<void>((resolve, reject) => d.waiters.push({ seq, resolve, reject }));
  };

  return {
    epoch,
    append(to, bytes) {
      if (closed) return Promise.reject(closed);
      const d = dest(to);
      // Behind sends already waiting, so a waiting send is never overtaken.
      if (d.queued.length === 0 && fits(d, bytes.byteLength)) return admit(to, d, bytes);
      if (waitMs === 0) return Promise.reject(full(to, d, bytes.byteLength));
      return new Promise<void>((resolve, reject) => {
        const waiter: RoomWaiter = { bytes, resolve, reject };
        waiter.cancel = setTimer(() => {
          d.queued = d.queued.filter((q) => q !== waiter);
          reject(full(to, d, bytes.byteLength));
        }, waitMs);
        d.queued.push(waiter);
      });
    },
    reserve(to, bytes) {
      if (closed) return undefined;
      const d = dest(to);
      if (d.queued.length > 0 || !fits(d, bytes.byteLength)) return undefined;
      d.held++;
      d.heldBytes += bytes.byteLength;
      const entry: Held = { seq: ++d.assigned, bytes };
      entry.release = transportKeys.outbox(to, entry.seq);
      d.reserved.add(entry.seq);
      let settled = false;
      return {
        seq: entry.seq,
        ops: [{ type: 'put', key: entry.release, value: bytes }],
        commit() {
          if (settled) return;
          settled = true;
          d.reserved.delete(entry.seq);
          // Closed: the entry is on disk, and the next process's outbox sends it.
          if (closed) return;
          // Written as `outseq` by the next flush, which comes before the entry's deletion.
          d.high = Math.max(d.high, entry.seq);
          durable(d, entry);
          options.onDurable(to);
        },
        abort() {
          if (settled) return;
          settled = true;
          d.reserved.delete(entry.seq);
          d.held--;
          d.heldBytes -= bytes.byteLength;
          // The newest number is given back; an older one stays a gap, which receivers accept.
          if (entry.seq === d.assigned) d.assigned--;
          promote(d);
          if (closed) return;
          options.onDurable(to);
          makeRoom(to, d);
        },
      };
    },
    held: (to) => ({ entries: dests.get(to)?.held ?? 0, bytes: dests.get(to)?.heldBytes ?? 0 }),
    unacked(to) {
      const d = dests.get(to);
      return d ? d.entries.slice(d.head) : [];
    },
    sendable(to, after) {
      const d = dests.get(to);
      if (!d) return { entries: [], from: 0 };
      // Binary search: entries are in seq order.
      let lo = d.head;
      let hi = d.entries.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (d.entries[mid]!.seq <= after) lo = mid + 1;
        else hi = mid;
      }
      return { entries: d.entries, from: lo };
    },
    durable: (to) => dests.get(to)?.durable ?? 0,
    ackedUpTo: (to) => dests.get(to)?.acked ?? 0,
    ack(to, upTo) {
      const d = dests.get(to);
      if (!d || upTo <= d.acked) return;
      d.acked = upTo;
      while (d.head < d.entries.length && d.entries[d.head]!.seq <= upTo) {
        const entry = d.entries[d.head++]!;
        d.held--;
        d.heldBytes -= entry.bytes.byteLength;
        if (entry.release) deletes.push(entry.release);
      }
      if (d.head === d.entries.length) {
        d.entries = [];
        d.head = 0;
      } else if (d.head >= 1024 && d.head * 2 >= d.entries.length) {
        d.entries.splice(0, d.head);
        d.head = 0;
      }
      settle(d);
      makeRoom(to, d);
      if (!closed) deleteLater();
    },
    acked: wait,
    flushed: (to) => wait(to, dests.get(to)?.assigned ?? 0),
    destinations: () => [...dests.keys()],
    async close(reason) {
      closed ??= reason;
      cancelDeletes?.();
      cancelDeletes = undefined;
      // Acknowledged entries not yet deleted go now: the next process would only send them again.
      if (deletes.length > 0) schedule();
      while (writing || scheduled) await (writing ?? Promise.resolve());
      rejectWaiters(closed);
    },
  };
}
