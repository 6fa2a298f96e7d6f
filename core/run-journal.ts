import { isAskAddress } from './address.js';
import type { AuditEntry, AuditLog } from './audit-log.js';
import { committedState } from './audit-state.js';
import type { Clock } from './clock.js';
import { parseAddress, type Envelope } from './envelope.js';
import { isAuditable } from './facts.js';
import { layout } from './layout.js';
import { put, type JournalEntry, type JournalKind, type LedgerEntry } from './run-store.js';
import type { Redactor } from './secrets.js';
import type { StorageOp } from './storage.js';
import type { OutboxReservation } from './transport.js';

/**
 * The unit of work of one run. Everything a macrostep produces that must reach disk (facts,
 * effect-ledger entries, mail, envelopes leaving the run, approvals, the transport's
 * receipts) is collected here and sealed into ONE batch with the checkpoint that describes
 * it; the batch commits or fails as a whole. This is the only place a run's ops are built,
 * so redaction happens here once, and the audit log is a declared projection of the facts
 * ({@link isAuditable}) rather than a second thing callers remember to write.
 */
export interface RunJournalOptions {
  runId: string;
  clock: Clock;
  redact: Redactor;
  audit: AuditLog;
  /** The sequence number of the newest journal entry already durable. */
  journalSeq?: number;
  /**
   * Takes an envelope leaving the run straight into the transport's outbox, through this
   * journal's batch (see `Transport.reserve`); `undefined` when it cannot, and the envelope
   * is then kept under `rout:` until the node routed it.
   */
  reserve?: (envelope: Envelope) => OutboxReservation | undefined;
}

/** An envelope for another run, written by the batch as a row of that run's inbound mail. */
export interface InboundMailRow {
  /** The run the mail is for. */
  readonly runId: string;
  readonly key: string;
  readonly envelope: Envelope;
}

/** A sealed batch: its ops, and what to do once they are on disk or have failed. */
export interface SealedBatch {
  readonly ops: readonly StorageOp[];
  /** Envelopes the node routes once the batch is durable (those the transport took are sent by it). */
  readonly leaving: readonly Envelope[];
  /** Mail for other runs this batch wrote as their rows: their holders are told once it is durable. */
  readonly mail: readonly InboundMailRow[];
  /** The batch is durable: commit the audit records, wake the waiters, run the after-commit work. */
  committed(): void;
  /** The batch failed: roll the audit log back and reject the waiters. */
  failed(error: unknown): Promise<void>;
}

/** Creates the journal of one run. */
export function createRunJournal(options: RunJournalOptions) {
  const { runId, clock, redact, audit } = options;
  let journalSeq = options.journalSeq ?? 0;
  let ops: StorageOp[] = [];
  let facts: AuditEntry[] = [];
  let leaving: Envelope[] = [];
  let mailOut: Envelope[] = [];
  let reserved: OutboxReservation[] = [];
  let after: Array<() => void> = [];
  let waiters: Array<{ resolve(): void; reject(error: unknown): void }> = [];
  // Journal entries not yet durable: a reader joining the journal with live events needs them.
  let recent: JournalEntry[] = [];

  const putRedacted = (key: string, value: unknown) => ops.push(put(key, redact(value)));

  return {
    /** The sequence number of the newest fact. */
    get journalSeq() {
      return journalSeq;
    },

    /** Whether anything waits to be sealed. */
    get dirty(): boolean {
      return ops.length > 0 || facts.length > 0 || leaving.length > 0 || mailOut.length > 0 || reserved.length > 0 || after.length > 0 || waiters.length > 0;
    },

    /** Facts journaled but not yet durable, oldest first. */
    get recent(): readonly JournalEntry[] {
      return recent;
    },

    /** Journals a fact (audited when {@link isAuditable}); returns its sequence number. */
    fact(kind: JournalKind, actor: string, data: Record<string, unknown>): number {
      const entry: JournalEntry = { seq: ++journalSeq, ts: clock.now(), kind, actor, data };
      if (isAuditable(kind)) facts.push({ kind, runId, actor, data: redact(data), ts: entry.ts });
      putRedacted(layout.journal(runId, entry.seq), entry);
      recent.push(entry);
      return entry.seq;
    },

    /** Writes an effect-ledger entry. */
    ledger(entry: LedgerEntry): void {
      putRedacted(layout.ledger(runId, entry.callId), entry);
    },

    /** Writes a mailbox entry (already stamped with its mailbox sequence number). */
    mail(actorId: string, envelope: Envelope): void {
      putRedacted(layout.mailbox(runId, actorId, envelope.seq), envelope);
    },

    /** Writes any other value of the run's layout (approvals, the run record, seen ids). */
    put(key: string, value: unknown): void {
      putRedacted(key, value);
    },

    /** Adds ops built elsewhere, already encoded (a transport's receipt, a deletion). */
    raw(extra: readonly StorageOp[]): void {
      ops.push(...extra);
    },

    /**
     * Queues an envelope that leaves the run: it is persisted with the batch (until routed)
     * and handed on once the batch is durable. Scrubbed here, on the node that resolved the
     * secrets: the receiving node never learnt them and could not scrub them.
     */
    leave(envelope: Envelope): void {
      const safe = redact(envelope);
      const to = parseAddress(safe.to).runId;
      if (to !== undefined && to !== runId && !isAskAddress(safe.to)) {
        // Another run's: a row of its inbound mail in this very batch, whichever node holds it.
        mailOut.push(safe);
        return;
      }
      if (!isAskAddress(safe.to)) {
        // For a peer: its outbox entry is written by this batch, and sent once it is durable.
        const reservation = options.reserve?.(safe);
        if (reservation) {
          ops.push(...reservation.ops);
          reserved.push(reservation);
          return;
        }
        ops.push(put(layout.routed(runId, safe.id), safe));
      }
      leaving.push(safe);
    },

    /**
     * Gives up what was collected and will never be sealed (the run stopped): envelopes the
     * transport numbered for this journal would otherwise hold back every later one to
     * their peers.
     */
    abandon(): void {
      for (const reservation of reserved) reservation.abort();
      reserved = [];
    },

    /** Runs `fn` once the next sealed batch is durable. */
    afterCommit(fn: () => void): void {
      after.push(fn);
    },

    /** Resolves once the next sealed batch is durable; rejects if it fails. */
    durable(): Promise<void> {
      return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
    },

    /**
     * Seals everything collected with `checkpoint` (the ops of the checkpoint itself, numbered
     * `seq`) into one batch, and starts collecting the next one.
     */
    seal(checkpoint: readonly StorageOp[], seq: number): SealedBatch {
      // Keyed by this run's checkpoint number, which no other batch of the run ever takes.
      const mail = mailOut.map((envelope, n): InboundMailRow => {
        const to = parseAddress(envelope.to).runId!;
        return { runId: to, key: layout.inboundMail(to, runId, seq, n), envelope };
      });
      for (const row of mail) ops.push(put(row.key, row.envelope));
      // The audit records commit to the values of their batch that stay as written (core/audit-state.ts).
      const auditOps = facts.length > 0 ? audit.append(facts, { state: committedState([...ops, ...checkpoint], facts.map((f) => f.kind)) }) : [];
      const batch: StorageOp[] = [...ops, ...auditOps, ...checkpoint];
      const out = leaving;
      const held = reserved;
      const todo = after;
      const wake = waiters;
      const upTo = journalSeq;
      ops = [];
      facts = [];
      leaving = [];
      mailOut = [];
      reserved = [];
      after = [];
      waiters = [];
      return {
        ops: batch,
        leaving: out,
        mail,
        committed() {
          for (const reservation of held) reservation.commit();
          audit.commit(auditOps);
          recent = recent.filter((entry) => entry.seq > upTo);
          for (const waiter of wake) waiter.resolve();
          for (const fn of todo) fn();
        },
        async failed(error) {
          for (const reservation of held) reservation.abort();
          await audit.rollback(auditOps).catch(() => {});
          for (const waiter of wake) waiter.reject(error);
        },
      };
    },
  };
}

/** The journal type returned by {@link createRunJournal}. */
export type RunJournal = ReturnType<typeof createRunJournal>;
