import type { ApprovalRecord } from '../approvals.js';
import { canonicalJson } from '../audit-log.js';
import type { Message, ToolCall } from '../messages.js';
import type { ModelResponse } from '../model.js';
import type { LedgerEntry, RunRecord, RunStore } from '../run-store.js';
import { conversationDigest } from './request-print.js';
import { agentOfCallId, modelCallId, parseToolCallId } from '../call-id.js';

/**
 * A recorded run as a replay reads it: the run record, its effect ledger (every model and
 * tool call with its result, by call id) and the approvals it still waits for. Read once,
 * from the live database or an imported recording; nothing is ever written back.
 */
export interface Recording {
  run: RunRecord;
  ledger: ReadonlyMap<string, LedgerEntry>;
  /** Approvals of the run nobody decided yet: where an unfinished run waits. */
  waiting: readonly ApprovalRecord[];
  /** Whether the recorded run ended (completed or failed). */
  readonly finished: boolean;
  /** The conversation the recording sent with model call `entry`, read back from its checkpoint when that is still kept. */
  conversationOf(entry: LedgerEntry): Promise<Message[] | undefined>;
  /** The tool call the recorded model answer of `callId` asked for (`undefined` when that answer is not recorded). */
  toolCallOf(callId: string): ToolCall | undefined;
}

/** The recorded calls of a run that completed (what a replay must consume), oldest first per agent. */
export const doneCalls = (ledger: ReadonlyMap<string, LedgerEntry>): LedgerEntry[] => [...ledger.values()].filter((e) => e.status === 'done');

/** Reads the recording of `runId` from `store`: `RUN_NOT_FOUND` when there is none. */
export async function loadRecording(store: RunStore, runId: string): Promise<Recording> {
  const run = await store.requireRun(runId);
  const [entries, approvals] = await Promise.all([store.ledger(runId), store.listApprovals()]);
  const ledger = new Map(entries.map((e) => [e.callId, e]));
  const waiting = approvals.filter((a) => a.runId === runId && a.status === 'pending');
  return {
    run,
    ledger,
    waiting,
    finished: run.status === 'completed' || run.status === 'failed',
    conversationOf: (entry) => recordedConversation(store, run, entry),
    toolCallOf(callId) {
      const id = parseToolCallId(callId);
      if (!id) return undefined;
      const answer = ledger.get(modelCallId(id.agentId, id.task, id.step))?.result as ModelResponse | undefined;
      return answer?.message?.toolCalls?.find((c) => c.id === id.id);
    },
  };
}

/** The agent's context in a deep root snapshot, found by actor id among the root's children. */
const agentContext = (snapshot: unknown, agentId: string) =>
  (snapshot as { children?: Record<string, { snapshot?: { context?: { conversation?: Message[] } } }> } | undefined)?.children?.[agentId]?.snapshot?.context;

/**
 * The messages model call `entry` was sent with. Not stored by the call (its print is a
 * digest): the checkpoint that recorded the answer holds the agent's conversation with the
 * answer appended, and what precedes the answer is the request, checked against the print.
 * Retention may have deleted that checkpoint; the next few are tried, then `undefined`.
 */
async function recordedConversation(store: RunStore, run: RunRecord, entry: LedgerEntry): Promise<Message[] | undefined> {
  if (entry.kind !== 'model' || entry.checkpoint === undefined) return undefined;
  const answer = canonicalJson((entry.result as ModelResponse | undefined)?.message);
  const agentId = agentOfCallId(entry.callId);
  for (let seq = entry.checkpoint; seq <= Math.min(run.checkpoint, entry.checkpoint + 3); seq++) {
    const checkpoint = await store.checkpoint(run.id, seq).catch(() => undefined);
    const conversation = agentContext(checkpoint?.snapshot, agentId)?.conversation;
    if (!Array.isArray(conversation)) continue;
    for (let i = conversation.length - 1; i >= 0; i--) {
      if (canonicalJson(conversation[i]) !== answer) continue;
      const request = conversation.slice(0, i);
      if (!entry.request || (request.length === entry.request.n && conversationDigest(request) === entry.request.digest)) return request;
    }
  }
  return undefined;
}
