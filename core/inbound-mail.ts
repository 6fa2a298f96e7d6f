import { askNodeOf } from './address.js';
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
    const prefix = `${layout.inboundMails(runId).gte!}${sender}:`;
    for await (const [key] of store.storage.entries({ gte: prefix, lt: `${prefix}\uffff`, reverse: true, limit: 1 })) {
      return Number(key.slice(prefix.length).split(':')[0]) + 1;
    }
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
