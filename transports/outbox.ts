import { randomBytes } from 'node:crypto';
import { decode, encode } from '../core/codec.js';
import type { Envelope } from '../core/envelope.js';
import { ErrorCode, isTroupeError, TroupeError } from '../core/errors.js';
import { prefixRange, seqKey, type Storage, type StorageOp } from '../core/storage.js';
import type { DeliverFn } from './index.js';

/**
 * Both ends of the durable sequence protocol between two nodes, on a {@link Storage}. Keys:
 * - `outbox:<toNode>:<seq>`  an envelope (msgpack) for `toNode`, written before `send` resolves, deleted once acked
 * - `outseq:<toNode>`        highest seq ever assigned to `toNode`, so numbering never restarts when the outbox empties
 * - `inbox:<fromNode>`       `{ epoch, seq }`: highest seq of `fromNode`'s outbox delivered locally
 * - `transport:epoch`        this storage's outbox incarnation; a receiver seeing a new one restarts its cursor
 */
export const transportKeys = {
  outbox: (toNode: string, seq: number) => `outbox:${toNode}:${seqKey(seq)}`,
  outseq: (toNode: string) => `outseq:${toNode}`,
  inbox: (fromNode: string) => `inbox:${fromNode}`,
  epoch: 'transport:epoch',
};

/** A durable, unacknowledged envelope. */
export interface OutboxEntry {
  readonly seq: number;
  readonly bytes: Uint8Array;
}

interface Waiter {
  seq: number;
  resolve(): void;
  reject(error: unknown): void;
}

interface Destination {
  assigned: number;
  durable: number;
  acked: number;
  entries: OutboxEntry[];
  waiters: Waiter[];
}

interface Append {
  to: string;
  entry: OutboxEntry;
  resolve(seq: number): void;
  reject(error: unknown): void;
}

/** The sender's side: numbered envelopes per destination, kept until acknowledged. */
export interface Outbox {
  readonly epoch: string;
  /** Persists an encoded envelope for `to`; resolves with its seq once durable (group-committed). */
  append(to: string, bytes: Uint8Array): Promise<number>;
  /** Durable, unacknowledged entries for `to`, oldest first. Do not mutate. */
  unacked(to: string): readonly OutboxEntry[];
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

/** Options of {@link createOutbox}. */
export interface OutboxOptions {
  storage: Storage;
  /** fsync each batch. */
  sync: boolean;
  /** Called after entries for `to` became durable (and sendable). */
  onDurable(to: string): void;
}

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
  const dests = new Map<string, Destination>();
  const dest = (to: string) => {
    let d = dests.get(to);
    if (!d) dests.set(to, (d = { assigned: 0, durable: 0, acked: 0, entries: [], waiters: [] }));
    return d;
  };
  for await (const [key, value] of storage.entries(prefixRange('outseq:'))) {
    const d = dest(key.slice('outseq:'.length));
    d.assigned = d.durable = d.acked = decode(value, Infinity) as number;
  }
  for await (const [key, value] of storage.entries(prefixRange('outbox:'))) {
    const cut = key.lastIndexOf(':');
    const d = dest(key.slice('outbox:'.length, cut));
    d.entries.push({ seq: Number(key.slice(cut + 1)), bytes: value });
  }
  for (const d of dests.values()) if (d.entries.length > 0) d.acked = Math.min(d.acked, d.entries[0]!.seq - 1);

  let appends: Append[] = [];
  let deletes: string[] = [];
  let writing: Promise<void> | undefined;
  let scheduled = false;
  let closed: Error | undefined;

  // Group commit: everything appended or acknowledged while a batch is being written goes
  // into the next one, so there is one write in flight and durability follows seq order.
  const schedule = () => {
    if (scheduled || writing) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      if (!writing && (appends.length > 0 || deletes.length > 0)) writing = flush().finally(() => ((writing = undefined), schedule()));
    });
  };

  const flush = async () => {
    const batch = appends;
    const dels = deletes;
    appends = [];
    deletes = [];
    const ops: StorageOp[] = dels.map((key) => ({ type: 'del', key }));
    const highest = new Map<string, number>();
    for (const a of batch) {
      ops.push({ type: 'put', key: transportKeys.outbox(a.to, a.entry.seq), value: a.entry.bytes });
      highest.set(a.to, a.entry.seq);
    }
    for (const [to, seq] of highest) ops.push({ type: 'put', key: transportKeys.outseq(to), value: encode(seq) });
    try {
      await storage.write(ops, { sync });
    } catch (cause) {
      // An outbox that cannot persist must refuse further sends rather than run ahead of
      // its durable state (a gap in flushed() would never resolve). Unsent deletes are
      // harmless: the receiver drops what it already has.
      const error = new TroupeError(ErrorCode.STORAGE_FAILED, `outbox write to ${storage.location} failed: ${(cause as Error)?.message ?? String(cause)}`, { cause });
      closed ??= error;
      for (const a of [...batch, ...appends]) a.reject(error);
      appends = [];
      rejectWaiters(closed);
      return;
    }
    for (const a of batch) {
      const d = dest(a.to);
      d.durable = a.entry.seq;
      if (a.entry.seq > d.acked) d.entries.push(a.entry);
      a.resolve(a.entry.seq);
    }
    for (const to of highest.keys()) options.onDurable(to);
  };

  const rejectWaiters = (reason: Error) => {
    for (const d of dests.values()) {
      for (const w of d.waiters) w.reject(reason);
      d.waiters = [];
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
      const entry = { seq: ++d.assigned, bytes };
      return new Promise<number>((resolve, reject) => {
        appends.push({ to, entry, resolve, reject });
        schedule();
      });
    },
    unacked: (to) => dests.get(to)?.entries ?? [],
    durable: (to) => dests.get(to)?.durable ?? 0,
    ackedUpTo: (to) => dests.get(to)?.acked ?? 0,
    ack(to, upTo) {
      const d = dests.get(to);
      if (!d || upTo <= d.acked) return;
      d.acked = upTo;
      let n = 0;
      while (n < d.entries.length && d.entries[n]!.seq <= upTo) deletes.push(transportKeys.outbox(to, d.entries[n++]!.seq));
      d.entries.splice(0, n);
      settle(d);
      if (!closed) schedule();
    },
    acked: wait,
    flushed: (to) => wait(to, dests.get(to)?.assigned ?? 0),
    destinations: () => [...dests.keys()],
    async close(reason) {
      closed ??= reason;
      while (writing || scheduled) await (writing ?? Promise.resolve());
      rejectWaiters(closed);
    },
  };
}

/** The receiver's cursor for one sender. */
export interface InboxCursor {
  epoch: string;
  seq: number;
}

/** What {@link Inbox.receive} did with one batch. */
export interface ReceiveOutcome {
  /** The cursor to acknowledge. */
  cursor: InboxCursor;
  delivered: number;
  duplicates: number;
  deadLetters: number;
  /** The sender came back with a new epoch: its numbering restarted. */
  epochReset: boolean;
  /** Delivery stopped on a transient failure; the rest of the batch comes again. */
  failure?: unknown;
  /** Delivery stopped because `proceed()` said so; nothing should be acknowledged. */
  stopped?: boolean;
}

/** How {@link Inbox.receive} hands envelopes over. */
export interface ReceiveHandlers {
  deliver: DeliverFn;
  onDeadLetter?: ((envelope: Envelope, fromNode: string, error: unknown) => void) | undefined;
  /** Checked before each envelope (false while the transport closes). */
  proceed(): boolean;
}

// Refusals that no retry can fix: the envelope becomes a dead letter instead of blocking the pair.
const PERMANENT: readonly string[] = [ErrorCode.UNKNOWN_ACTOR, ErrorCode.INVALID_ENVELOPE, ErrorCode.FRAME_TOO_LARGE];

/** The receiver's side: per sender, the highest seq delivered, so duplicates are dropped. */
export interface Inbox {
  cursor(from: string): Promise<InboxCursor>;
  /**
   * Delivers the new envelopes of a batch from `from` one by one, moving the cursor after
   * each. Callers run batches of one sender strictly one after another.
   */
  receive(from: string, batch: { epoch: string; items: ReadonlyArray<{ seq: number; envelope: Envelope }> }, handlers: ReceiveHandlers): Promise<ReceiveOutcome>;
}

/** Creates the {@link Inbox} on `storage`; cursors are read once, then cached. */
export function createInbox(storage: Storage, sync: boolean): Inbox {
  const cache = new Map<string, InboxCursor>();
  const ops = (from: string, cursor: InboxCursor): StorageOp[] => [{ type: 'put', key: transportKeys.inbox(from), value: encode(cursor) }];
  const cursorOf = async (from: string): Promise<InboxCursor> => {
    let c = cache.get(from);
    if (!c) {
      const raw = await storage.get(transportKeys.inbox(from));
      c = raw ? (decode(raw, Infinity) as InboxCursor) : { epoch: '', seq: 0 };
      cache.set(from, c);
    }
    return { ...c };
  };
  return {
    cursor: cursorOf,
    async receive(from, batch, handlers) {
      const outcome: ReceiveOutcome = { cursor: { epoch: batch.epoch, seq: 0 }, delivered: 0, duplicates: 0, deadLetters: 0, epochReset: false };
      try {
        const stored = await cursorOf(from);
        // A new epoch means the sender's outbox storage started over, numbering from 1.
        if (stored.epoch === batch.epoch) outcome.cursor = stored;
        else outcome.epochReset = stored.epoch !== '';
      } catch (error) {
        return { ...outcome, failure: error };
      }
      for (const { seq, envelope } of batch.items) {
        if (!handlers.proceed()) return { ...outcome, stopped: true };
        if (seq <= outcome.cursor.seq) {
          outcome.duplicates++;
          continue;
        }
        const next = { epoch: batch.epoch, seq };
        let taken = false;
        try {
          await handlers.deliver(envelope, from, { seq, takeCursorOps: () => ((taken = true), ops(from, next)) });
          outcome.delivered++;
        } catch (error) {
          if (!isTroupeError(error) || !PERMANENT.includes(error.code)) return { ...outcome, failure: error };
          taken = false;
          outcome.deadLetters++;
          try {
            handlers.onDeadLetter?.(envelope, from, error);
          } catch {
            // an observer's failure must not stall the stream
          }
        }
        try {
          if (!taken) await storage.write(ops(from, next), { sync });
        } catch (error) {
          return { ...outcome, failure: error };
        }
        cache.set(from, next);
        outcome.cursor = next;
      }
      return outcome;
    },
  };
}
