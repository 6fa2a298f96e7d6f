import { address } from './envelope.js';
import type { SerializedError } from './errors.js';
import type { RunEvent } from './events.js';
import type { Usage } from './model.js';
import type { JournalEntry, JournalKind } from './run-store.js';

/**
 * The journal and the live event stream describe the same facts; this is the one
 * translation from a journal entry to the event a live reader saw (or would have seen) for
 * it, carrying the entry's `seq` as `journalSeq`. Entries without a live counterpart (dead letters) give
 * `undefined`.
 */
export function eventOfJournal(runId: string, crew: string, entry: JournalEntry): RunEvent | undefined {
  const d = entry.data;
  const journalSeq = entry.seq;
  const qualify = (a: unknown) => (typeof a === 'string' && a.includes('/') ? a : address(runId, String(a)));
  switch (entry.kind) {
    case 'run.started':
      return { type: 'run.started', runId, crew, journalSeq };
    case 'run.resumed':
      return { type: 'run.resumed', runId, crew, checkpoint: Number(d.checkpoint), journalSeq };
    case 'run.completed':
      return { type: 'run.completed', runId, output: String(d.output ?? ''), journalSeq };
    case 'run.failed':
      return { type: 'run.failed', runId, error: d.error as SerializedError, journalSeq };
    case 'state':
      return { type: 'state', runId, actor: entry.actor, state: String(d.state), journalSeq };
    case 'message':
      if (d.deadLetter) return undefined;
      return { type: 'message', runId, from: qualify(entry.actor), to: qualify(d.to), messageType: String(d.type), journalSeq };
    case 'model.call':
      return { type: 'model.call', runId, actor: entry.actor, callId: String(d.callId), model: String(d.model), ...(d.requested !== undefined ? { requested: String(d.requested) } : {}), usage: d.usage as Usage, ...(d.cost !== undefined ? { cost: Number(d.cost) } : {}), ms: Number(d.ms ?? 0), replayed: false, journalSeq };
    case 'model.error':
      return { type: 'model.error', runId, actor: entry.actor, callId: String(d.callId), model: String(d.model), error: d.error as SerializedError, ...(d.ms !== undefined ? { ms: Number(d.ms) } : {}), journalSeq };
    case 'tool.call':
      return { type: 'tool.call', runId, actor: entry.actor, callId: String(d.callId), tool: String(d.tool), ok: d.ok === true, replayed: d.inheritedFrom !== undefined, ms: Number(d.ms ?? 0), journalSeq };
    case 'approval.requested':
      return {
        type: 'approval.requested',
        runId,
        actor: entry.actor,
        approvalId: String(d.approvalId),
        tool: String(d.tool),
        reason: d.reason === 'policy' ? 'policy' : 'outcome-unknown',
        message: String(d.message ?? ''),
        journalSeq,
      };
    case 'permission':
      return {
        type: 'permission',
        runId,
        actor: entry.actor,
        callId: String(d.callId),
        tool: String(d.tool),
        decision: d.decision === 'deny' ? 'deny' : d.decision === 'ask' ? 'ask' : 'allow',
        journalSeq,
      };
    case 'approval.decided':
      return { type: 'approval.decided', runId, actor: entry.actor, approvalId: String(d.approvalId), decision: d.decision === 'reject' ? 'reject' : 'approve', journalSeq };
    default:
      return undefined;
  }
}

/**
 * Which facts the audit log records: all but state changes and model errors (the model call
 * that eventually succeeds, or the run's failure, is what an auditor needs). The audit log
 * is this projection of the journal, nothing written beside it.
 */
export function isAuditable(kind: JournalKind): boolean {
  return kind !== 'state' && kind !== 'model.error';
}

/** Options of a run handle's `events()`. */
export interface RunEventsOptions {
  signal?: AbortSignal;
  /**
   * `'start'` (default): everything the run's journal holds first, then live events.
   * `'now'`: only what happens from this call on.
   */
  from?: 'start' | 'now';
}

/**
 * A run's events from its start: the journal entries (durable ones read from storage plus
 * those still on their way to disk), then the live stream, skipping live events whose
 * journal entry was already yielded. `live` must be subscribed before `journal` is read.
 */
export async function* joinJournalAndLive(
  translate: (entry: JournalEntry) => RunEvent | undefined,
  journal: () => Promise<JournalEntry[]>,
  live: AsyncGenerator<RunEvent>,
): AsyncGenerator<RunEvent> {
  let upTo = 0;
  try {
    const entries = (await journal()).sort((a, b) => a.seq - b.seq);
    for (const entry of entries) {
      if (entry.seq <= upTo) continue;
      upTo = entry.seq;
      const event = translate(entry);
      if (event) yield event;
    }
    for await (const event of live) {
      if (event.journalSeq !== undefined && event.journalSeq <= upTo) continue;
      yield event;
    }
  } finally {
    await live.return(undefined);
  }
}
