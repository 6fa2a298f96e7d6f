import { decode, encode } from '../core/codec.js';
import type { Envelope } from '../core/envelope.js';
import { ErrorCode, isTroupeError } from '../core/errors.js';
import { layout } from '../core/layout.js';
import type { Storage, StorageOp } from '../core/storage.js';
import type { DeliverFn } from '../core/transport.js';
import { directWrites, type TransportWrites } from './merged-writes.js';

/**
 * The receiver's side of the durable sequence protocol between two nodes (the sender's is
 * transports/outbox.ts): per sender, the highest seq delivered (`inbox:<fromNode>`), so a
 * resent envelope is dropped, and a bounded ring of the envelopes refused for good
 * (`deadletter:<slot>`, `deadletter:next`). Keys are built in core/layout.ts.
 */

const transportKeys = layout.transport;

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
  /** Seqs of this batch refused for good (dead letters), told to the sender with the ack. */
  refused: number[];
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
const PERMANENT: readonly string[] = [ErrorCode.UNKNOWN_ACTOR, ErrorCode.INVALID_ENVELOPE, ErrorCode.FRAME_TOO_LARGE, ErrorCode.ENVELOPE_REFUSED];

/** What the receiver keeps of an envelope it refused: enough to investigate, never the payload. */
export interface DeadLetter {
  from: string;
  seq: number;
  id: string;
  type: string;
  to: string;
  code: string;
  message: string;
  at: number;
}

/** Options of {@link createInbox}. */
export interface InboxOptions {
  /** Most dead letters kept; the oldest is overwritten. Default 1000. */
  maxDeadLetters?: number;
  now?: () => number;
  /** The writes it shares with the outbox (merged per turn); default: its own to `storage`. */
  writes?: TransportWrites;
}

/** The receiver's side: per sender, the highest seq delivered, so duplicates are dropped. */
export interface Inbox {
  cursor(from: string): Promise<InboxCursor>;
  /** The dead letters kept, oldest first. */
  deadLetters(): Promise<DeadLetter[]>;
  /**
   * Delivers the new envelopes of a batch from `from` one by one, then records the cursor
   * (and any dead letters) in one storage batch for the whole frame; a deliverer that took
   * its receipt (`takeCursorOps`) already made its cursor durable. Resolves with the cursor
   * to acknowledge, which is always durable. Callers run batches of one sender strictly one
   * after another.
   */
  receive(from: string, batch: { epoch: string; items: ReadonlyArray<{ seq: number; envelope: Envelope }>; checkedWithin?: number }, handlers: ReceiveHandlers): Promise<ReceiveOutcome>;
}

/**
 * Creates the {@link Inbox} on `storage`; cursors are read once, then cached. Dead letters
 * are written with the cursor that passes them, in a ring: a peer sending nothing but
 * refusals costs a bounded amount of disk.
 */
export function createInbox(storage: Storage, sync: boolean, inboxOptions: InboxOptions = {}): Inbox {
  const maxDead = inboxOptions.maxDeadLetters ?? 1000;
  const now = inboxOptions.now ?? Date.now;
  const cache = new Map<string, InboxCursor>();
  const { write } = inboxOptions.writes ?? directWrites(storage, sync);
  const ops = (from: string, cursor: InboxCursor): StorageOp[] => [{ type: 'put', key: transportKeys.inbox(from), value: encode(cursor) }];
  let deadNext: number | undefined;
  const deadOps = async (letter: DeadLetter): Promise<StorageOp[]> => {
    if (maxDead === 0) return [];
    if (deadNext === undefined) {
      const raw = await storage.get(transportKeys.deadLetterNext);
      deadNext = raw ? (decode(raw, Infinity) as number) : 0;
    }
    const slot = deadNext % maxDead;
    deadNext++;
    return [
      { type: 'put', key: transportKeys.deadLetter(slot), value: encode(letter) },
      { type: 'put', key: transportKeys.deadLetterNext, value: encode(deadNext) },
    ];
  };
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
    async deadLetters() {
      const letters: DeadLetter[] = [];
      for await (const [key, value] of storage.entries(transportKeys.deadLetters())) if (key !== transportKeys.deadLetterNext) letters.push(decode(value, Infinity) as DeadLetter);
      return letters.sort((a, b) => a.at - b.at);
    },
    async receive(from, batch, handlers) {
      const outcome: ReceiveOutcome = { cursor: { epoch: batch.epoch, seq: 0 }, delivered: 0, duplicates: 0, deadLetters: 0, refused: [], epochReset: false };
      try {
        const stored = await cursorOf(from);
        // A new epoch means the sender's outbox storage started over, numbering from 1.
        if (stored.epoch === batch.epoch) outcome.cursor = stored;
        else outcome.epochReset = stored.epoch !== '';
      } catch (error) {
        return { ...outcome, failure: error };
      }
      // The frame's receipts are written as one batch at its end (or where delivery stops),
      // not one per envelope: per-envelope cursor writes were most of the receive cost.
      // `outcome.cursor` (what gets acknowledged) only ever names what is durable.
      let processed: InboxCursor = outcome.cursor;
      let unwritten = false; // an envelope was delivered whose cursor nobody wrote yet
      let pending: StorageOp[] = []; // dead-letter summaries waiting for the frame's batch
      const commit = async (): Promise<unknown> => {
        if (unwritten || pending.length > 0) {
          try {
            await write([...ops(from, processed), ...pending]);
          } catch (error) {
            // Some receipts may be durable through a deliverer's own batch: read them again.
            cache.delete(from);
            return error;
          }
        }
        unwritten = false;
        pending = [];
        cache.set(from, processed);
        outcome.cursor = processed;
        return undefined;
      };
      for (const { seq, envelope } of batch.items) {
        if (!handlers.proceed()) {
          // What was delivered stays delivered: recording it spares a redelivery after close.
          const failure = await commit();
          return { ...outcome, stopped: true, ...(failure === undefined ? {} : { failure }) };
        }
        if (seq <= processed.seq) {
          outcome.duplicates++;
          continue;
        }
        const next = { epoch: batch.epoch, seq };
        let taken = false;
        try {
          await handlers.deliver(envelope, from, { seq, checkedWithin: batch.checkedWithin, takeCursorOps: () => ((taken = true), ops(from, next)) });
          outcome.delivered++;
        } catch (error) {
          if (!isTroupeError(error) || !PERMANENT.includes(error.code)) {
            await commit(); // acknowledge what came before; this one comes again
            return { ...outcome, failure: error };
          }
          taken = false;
          outcome.deadLetters++;
          outcome.refused.push(seq);
          try {
            pending.push(...(await deadOps({ from, seq, id: envelope.id, type: envelope.type, to: envelope.to, code: error.code, message: error.message.slice(0, 500), at: now() })));
          } catch (failure) {
            await commit();
            return { ...outcome, failure };
          }
          try {
            handlers.onDeadLetter?.(envelope, from, error);
          } catch {
            // an observer's failure must not stall the stream
          }
        }
        processed = next;
        // A taken receipt is durable once `deliver` resolved, and the cursor is cumulative:
        // it covers every envelope before it too.
        unwritten = !taken;
        if (taken && pending.length === 0) {
          cache.set(from, processed);
          outcome.cursor = processed;
        }
      }
      const failure = await commit();
      if (failure !== undefined) return { ...outcome, failure };
      return outcome;
    },
  };
}
