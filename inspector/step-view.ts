import { BLACKBOARD_ID } from '../actors/blackboard.js';
import type { RunStore } from '../core/run-store.js';
import { clean, preview, type TextPreview } from './text.js';

/**
 * What happened at one step of a run: the journal entry, the call it records (arguments and
 * result from the effect ledger), and the crew as the checkpoint that sealed the step holds
 * it (the actor's conversation, the blackboard). Everything is read from storage, where the
 * kernel wrote it already scrubbed of secrets.
 */

/** Most messages of a conversation one step view carries (the newest). */
export const STEP_MESSAGES = 40;

/** One message of an agent's conversation. */
export interface StepMessage {
  /** Position in the whole conversation (0 is the first message). */
  index: number;
  role: string;
  content: TextPreview;
  toolCalls: Array<{ id: string; name: string; args: TextPreview }>;
  /** On a tool message: the call it answers, and whether it is an error. */
  toolCallId?: string;
  isError?: boolean;
}

/** The model or tool call a step records. */
export interface StepCall {
  kind: 'model' | 'tool';
  callId: string;
  name: string;
  /** `intent` while it runs (or when it was interrupted), `done` once its result is recorded. */
  status: 'intent' | 'done' | 'unknown';
  /** Tool calls: the arguments. Model calls: none (the request is the conversation). */
  args: TextPreview | null;
  /** Tool calls: what the tool returned. Model calls: the reply's text. */
  result: TextPreview | null;
  /** Model calls: the tool calls the reply asked for. */
  toolCalls: Array<{ id: string; name: string; args: TextPreview }>;
}

/** Everything the page shows about one step. */
export interface StepView {
  runId: string;
  seq: number;
  ts: number;
  kind: string;
  actor: string;
  /** The journal entry's own data, one line. */
  summary: string;
  /** The checkpoint the crew is shown as, or `null` when none holds the step yet. */
  checkpoint: { seq: number; ts: number; journalSeq: number } | null;
  call: StepCall | null;
  /** The actor's conversation at that checkpoint (agents only). */
  conversation: { actor: string; total: number; messages: StepMessage[] } | null;
  /** The crew's blackboard entries at that checkpoint (crews with one). */
  blackboard: TextPreview | null;
}

type Ctx = { conversation?: unknown; [key: string]: unknown };
const asArray = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);
const str = (value: unknown) => (typeof value === 'string' ? value : '');

function callsOf(value: unknown, max: number): StepMessage['toolCalls'] {
  return asArray(value).map((c) => {
    const call = (c ?? {}) as { id?: unknown; name?: unknown; args?: unknown };
    return { id: clean(call.id), name: clean(call.name), args: preview(call.args, max) };
  });
}

function messageOf(value: unknown, index: number, max: number): StepMessage {
  const m = (value ?? {}) as { role?: unknown; content?: unknown; toolCalls?: unknown; toolCallId?: unknown; isError?: unknown; name?: unknown };
  return {
    index,
    role: clean(m.role, 20),
    content: preview(str(m.content), max),
    toolCalls: callsOf(m.toolCalls, max),
    ...(m.role === 'tool' ? { toolCallId: clean(m.toolCallId), isError: m.isError === true } : {}),
  };
}

/** A tool's recorded answer is a tool message; its content, JSON when it is JSON, is what the tool returned. */
function toolOutput(result: unknown): unknown {
  const content = (result as { role?: unknown; content?: unknown } | null)?.role === 'tool' ? (result as { content: unknown }).content : result;
  if (typeof content !== 'string') return content;
  try {
    return JSON.parse(content) as unknown;
  } catch {
    return content;
  }
}

/**
 * The view of step `seq` of `runId`, every text capped at `max` characters; `undefined`
 * when the journal has no such entry.
 */
export async function stepView(store: RunStore, runId: string, seq: number, max: number): Promise<StepView | undefined> {
  const [entry] = await store.journalBetween(runId, seq - 1, seq);
  if (!entry) return undefined;
  const marks = await store.checkpointMarks(runId);
  // The batch that made the step durable is sealed with the first checkpoint at or after it.
  const mark = marks.find((m) => m.journalSeq >= seq) ?? marks.at(-1);
  const checkpoint = mark && (await store.checkpoint(runId, mark.seq));
  const children = ((checkpoint?.snapshot as { children?: Record<string, { snapshot?: { context?: Ctx } }> } | undefined)?.children ?? {}) as Record<string, { snapshot?: { context?: Ctx } }>;
  const context = children[entry.actor]?.snapshot?.context;
  const conversation = Array.isArray(context?.conversation) ? (context.conversation as unknown[]) : undefined;
  const board = children[BLACKBOARD_ID]?.snapshot?.context as { entries?: unknown } | undefined;

  let call: StepCall | null = null;
  const callId = entry.data.callId;
  if (typeof callId === 'string' && (entry.kind === 'model.call' || entry.kind === 'tool.call' || entry.kind === 'model.error' || entry.kind === 'permission' || entry.kind === 'approval.requested' || entry.kind === 'approval.decided')) {
    const recorded = await store.ledgerEntry(runId, callId);
    const kind = entry.kind === 'model.call' || entry.kind === 'model.error' ? 'model' : 'tool';
    const reply = (recorded?.result as { message?: { content?: unknown; toolCalls?: unknown } } | undefined)?.message;
    call = {
      kind,
      callId: clean(callId),
      name: clean(recorded?.name ?? entry.data.tool ?? entry.data.model),
      status: recorded?.status ?? 'unknown',
      args: kind === 'tool' && recorded && 'args' in recorded ? preview(recorded.args, max) : null,
      result: recorded?.result === undefined ? null : kind === 'model' ? preview(str(reply?.content), max) : preview(toolOutput(recorded.result), max),
      toolCalls: kind === 'model' ? callsOf(reply?.toolCalls, max) : [],
    };
  }
  const { callId: _id, ...rest } = entry.data;
  return {
    runId,
    seq: entry.seq,
    ts: entry.ts,
    kind: entry.kind,
    actor: clean(entry.actor),
    summary: clean(rest),
    checkpoint: mark ?? null,
    call,
    conversation: conversation
      ? { actor: clean(entry.actor), total: conversation.length, messages: conversation.slice(-STEP_MESSAGES).map((m, i) => messageOf(m, conversation.length - Math.min(conversation.length, STEP_MESSAGES) + i, max)) }
      : null,
    blackboard: board?.entries === undefined ? null : preview(board.entries, max),
  };
}

/**
 * One text of a step view by its path (`call.result`, `conversation.messages.3.content`,
 * `blackboard`): what the page asks for when a preview was cut.
 */
export function textAt(view: StepView, path: readonly (string | number)[]): TextPreview | undefined {
  let at: unknown = view;
  for (const part of path) {
    if (at === null || typeof at !== 'object') return undefined;
    at = Array.isArray(at) ? at[Number(part)] : (at as Record<string, unknown>)[String(part)];
  }
  const t = at as TextPreview | undefined;
  return t && typeof t === 'object' && typeof t.text === 'string' && typeof t.chars === 'number' ? t : undefined;
}
