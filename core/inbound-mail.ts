import { askNodeOf, ROOT_ACTOR_ID } from './address.js';
import { parseAddress, type Envelope } from './envelope.js';
import { ErrorCode, TroupeError } from './errors.js';
import { layout } from './layout.js';
import { put, type RunRecord, type RunStore } from './run-store.js';
import type { StorageOp } from './storage.js';

/**
 * Mail between runs is rows (`inq:<run>:…`, core/layout.ts): a run's envelope for another
 * run is written by the sender's own batch (core/run-journal.ts), an envelope a node is
 * given from outside for a run it does not hold by a write of its own; the node holding the
 * target run drains the rows into that run's mailboxes, deleting each in the batch that
 * accepts it (core/run-host.ts `drainMail`). So mail reaches a run whichever node holds it,
 * or none does yet, on one database.
 * @module
 */

/** Whether `record` names a run that can still take mail. */
export const takesMail = (record: RunRecord | undefined): record is RunRecord => record !== undefined && record.status !== 'completed' && record.status !== 'failed';

/** The error for mail to a run that does not exist or has ended. */
export function noSuchRun(envelope: Pick<Envelope, 'to'> | string): TroupeError {
  const to = typeof envelope === 'string' ? envelope : envelope.to;
  return new TroupeError(ErrorCode.UNKNOWN_ACTOR, `no active actor at ${to}: no unfinished run "${parseAddress(to).runId}"`, { details: { to } });
}

/**
 * Writes envelopes a node was given from outside (`tell`, `deliver`) for runs it does not
 * hold, as rows of the sender `~<owner>`, through `write` (the node's write queue). Rows of
 * one run are numbered after the newest one this owner left there, one write at a time per
 * run, so a row is never overwritten.
 */
export function createOutsideMail(store: RunStore, owner: string, write: (ops: StorageOp[]) => Promise<void>) {
  const sender = layout.outsideSender(owner);
  const chains = new Map<string, Promise<unknown>>();
  const next = async (runId: string): Promise<number> => {
    for await (const [key] of store.storage.entries({ ...layout.inboundMailsFrom(runId, sender), reverse: true, limit: 1 })) return layout.parseInboundMail(key).seq + 1;
    return 1;
  };
  return {
    /**
     * Resolves once `envelope` (already checked and scrubbed) is durable as a row;
     * `UNKNOWN_ACTOR` when its run takes no mail. A reply to another node's `ask` inbox
     * (`_ask.<node>`, not a run) is written as a row of that inbox.
     */
    post(envelope: Envelope): Promise<void> {
      const runId = parseAddress(envelope.to).runId!;
      const work = (chains.get(runId) ?? Promise.resolve()).catch(() => {}).then(async () => {
        if (askNodeOf(runId) === undefined && !takesMail(await store.getRun(runId))) throw noSuchRun(envelope);
        await write([put(layout.inboundMail(runId, sender, await next(runId), 0), envelope)]);
      });
      chains.set(runId, work);
      void work.catch(() => {}).finally(() => {
        if (chains.get(runId) === work) chains.delete(runId);
      });
      return work;
    },
  };
}

/**
 * Calls `round` once; a call while a round runs asks for one more after it (never two at
 * once, never a request lost): what draining rows needs, as each notification may find the
 * rows of the one before.
 */
export function singleFlight(round: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined;
  let again = false;
  return () => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await round();
      } while (again);
    })().finally(() => (running = undefined));
    return running;
  };
}

/** What a node gives {@link createNodeMail}. */
export interface NodeMailOptions {
  store: RunStore;
  /** The node's write queue. */
  write(ops: StorageOp[]): Promise<void>;
  /** The node's owner id (the sender of its outside rows). */
  owner: string;
  /** The node's `ask` inbox (`_ask.<node>`): replies to its asks from other nodes are rows of it. */
  askInbox: string;
  /** Checks a row read back as anything crossing into the node is checked. */
  parse(value: unknown): Envelope;
  /** Hands a reply to the ask it answers (a late one is dropped). */
  answer(reply: Envelope): void;
  /** Whether this node knows the run (hosts it, or keeps it unloaded). */
  holds(runId: string): boolean;
  /** Loads the run if need be and drains its rows; `false` when the run is not running here after all. */
  drain(runId: string): Promise<boolean>;
  /** The node's clock, for the age of replies left in other nodes' ask inboxes. */
  now(): number;
}

/**
 * How long a reply may wait in another node's `ask` inbox before any node deletes it. A live
 * node drains its inbox as each reply is written, and again at every poll, and drops what is
 * left at its next start: a reply this old belongs to a node that is gone and whose id is not
 * used again (the nodes of a cluster that scales), and nobody else would ever delete it. An
 * hour leaves room for clocks that disagree, and for a node stopped for a while.
 */
export const STALE_ASK_REPLY_MS = 60 * 60_000;

/** A node's side of mail as rows: writing rows for runs it does not hold, and taking those for runs it does. */
export function createNodeMail(o: NodeMailOptions) {
  const outside = createOutsideMail(o.store, o.owner, o.write);
  const drainAsks = singleFlight(async () => {
    const rows = await o.store.inboundMail(o.askInbox);
    if (rows.length === 0) return;
    for (const { value, unreadable } of rows) {
      if (unreadable) continue;
      try {
        o.answer(o.parse(value));
      } catch {
        // not a reply anyone can be given; deleted with the rest
      }
    }
    await o.write(rows.map(({ key }) => ({ type: 'del' as const, key })));
  });
  /**
   * Someone wrote mail for `runId`: drained here at once when this node holds the run
   * (loaded first when it is unloaded). Held elsewhere or by nobody, the row waits for its
   * holder (a shared storage wakes it) or for the node that takes the run.
   */
  const mailFor = async (runId: string): Promise<void> => {
    if (runId === o.askInbox) return drainAsks();
    if (o.holds(runId) && (await o.drain(runId))) return;
    if (!takesMail(await o.store.getRun(runId))) throw noSuchRun(`${runId}/${ROOT_ACTOR_ID}`);
  };
  /** Deletes the replies in another node's ask inbox older than {@link STALE_ASK_REPLY_MS}; keeps what it cannot read. */
  const dropStaleReplies = async (inbox: string) => {
    const now = o.now();
    const ops: StorageOp[] = [];
    for (const { key, value, unreadable } of await o.store.inboundMail(inbox)) {
      if (unreadable) continue;
      let reply: Envelope;
      try {
        reply = o.parse(value);
      } catch {
        continue;
      }
      if (now - reply.ts > STALE_ASK_REPLY_MS) ops.push({ type: 'del', key });
    }
    if (ops.length > 0) await o.write(ops);
  };
  const dropMailOf = async (runId: string) => {
    const ops: StorageOp[] = [];
    for await (const [key] of o.store.storage.entries(layout.inboundMails(runId))) ops.push({ type: 'del', key });
    if (ops.length > 0) await o.write(ops);
  };
  return {
    post: outside.post,
    mailFor,
    /** Whether mail for `runId` is this node's to take. */
    isMine: (runId: string) => runId === o.askInbox || o.holds(runId),
    /**
     * Drains the mail waiting for runs this node holds (at start; on a shared storage at every
     * poll, as a notification can be missed), and deletes mail left for runs that ended or do
     * not exist: it can arrive as its run ends, and would otherwise stay for good; so are
     * replies left in another node's ask inbox for longer than {@link STALE_ASK_REPLY_MS}. With
     * `skip`, those runs are passed over (at start: the runs just loaded read their own).
     */
    async drainHeld(skip?: (runId: string) => boolean): Promise<void> {
      const runs = await o.store.runsWithMail();
      await Promise.all(
        runs.map(async (runId) => {
          if (skip?.(runId)) return;
          if (runId === o.askInbox || o.holds(runId)) return mailFor(runId).catch(() => {});
          if (askNodeOf(runId) !== undefined) return dropStaleReplies(runId).catch(() => {});
          // A failed read deletes nothing: only a run known to have ended (or never been) loses its mail.
          const record = await o.store.getRun(runId).then((r) => ({ r }), () => undefined);
          if (!record || takesMail(record.r)) return;
          await dropMailOf(runId).catch(() => {});
        }),
      );
    },
    /** Deletes replies left for asks of this node's earlier incarnation: nobody waits for them. */
    dropStaleReplies: () => dropMailOf(o.askInbox),
  };
}
