import { canonicalJson } from '../audit-log.js';
import type { Message, ToolCall } from '../messages.js';
import type { ModelStep } from '../runtime.js';
import type { LedgerEntry } from '../run-store.js';
import { requestPrint, type RequestPrint } from './request-print.js';

/** What differs between a recorded call and the one new code asked for. */
export const DivergenceKind = {
  /** The agent asked a different model. */
  model: 'model',
  /** It offered other tools (names). */
  tools: 'tools',
  /** Same tool names, but their descriptions, input schemas or the call settings differ. */
  spec: 'spec',
  /** The conversation sent differs (a prompt, a task, an earlier answer). */
  conversation: 'conversation',
  /** A tool call names another tool, or other arguments. */
  toolCall: 'tool-call',
  /** The new code made a call the recording does not have. */
  unrecorded: 'unrecorded',
  /** The recording has calls the new code never made. */
  notAsked: 'not-asked',
  /** The run ended with another outcome or answer. */
  outcome: 'outcome',
} as const;

/** One of the {@link DivergenceKind} strings. */
export type DivergenceKind = (typeof DivergenceKind)[keyof typeof DivergenceKind];

/** Where and how a replay left its recording. */
export interface Divergence {
  kind: DivergenceKind;
  /** The agent whose call differs (absent for the run's outcome). */
  agent?: string;
  task?: number;
  step?: number;
  callId?: string;
  /** What the recording had, in words. */
  recorded: string;
  /** What the new code asked for, in words. */
  requested: string;
  /** For a conversation: the first message that differs (0-based), when the recording still has its text. */
  message?: number;
}

/** Longest text of a message shown in a report. */
const SHOWN = 240;

/** A message, short enough for one line of a report. */
export const describeMessage = (m: Message | undefined): string => {
  if (!m) return '(no message)';
  const calls = m.role === 'assistant' && m.toolCalls?.length ? ` → ${m.toolCalls.map(describeCall).join(', ')}` : '';
  const text = m.content.length > SHOWN ? `${m.content.slice(0, SHOWN)}…` : m.content;
  return `${m.role}: ${JSON.stringify(text)}${calls}`;
};

/** A tool call as `name({"args"})`, bounded. */
export const describeCall = (c: Pick<ToolCall, 'name' | 'args'>): string => {
  const args = canonicalJson(c.args);
  return `${c.name}(${args.length > SHOWN ? `${args.slice(0, SHOWN)}…` : args})`;
};

/**
 * The first way `step` asks something else than the recorded model call `entry`, or
 * `undefined` when it asks the same (an entry recorded before prints existed is matched by
 * its call id alone). `recorded` gives the recording's conversation for the report.
 */
export async function compareModelCall(
  entry: LedgerEntry,
  step: ModelStep,
  at: { agent: string; callId: string },
  recorded: () => Promise<Message[] | undefined>,
  options: { checkModel: boolean },
): Promise<Divergence | undefined> {
  const print = entry.request;
  if (!print) return undefined;
  const asked: RequestPrint = requestPrint(step);
  const where = { agent: at.agent, task: step.task, step: step.step, callId: at.callId };
  if (options.checkModel && print.model !== asked.model) return { kind: DivergenceKind.model, ...where, recorded: `model ${print.model}`, requested: `model ${asked.model}` };
  if (canonicalJson(print.tools) !== canonicalJson(asked.tools)) {
    const added = asked.tools.filter((t) => !print.tools.includes(t));
    const removed = print.tools.filter((t) => !asked.tools.includes(t));
    const change = [added.length ? `adds ${added.join(', ')}` : '', removed.length ? `drops ${removed.join(', ')}` : ''].filter(Boolean).join(', ') || 'reorders them';
    return { kind: DivergenceKind.tools, ...where, recorded: `tools [${print.tools.join(', ')}]`, requested: `tools [${asked.tools.join(', ')}] (${change})` };
  }
  if (print.spec !== asked.spec) return { kind: DivergenceKind.spec, ...where, recorded: 'the recorded tool specs and settings', requested: 'changed tool descriptions, input schemas or call settings' };
  if (print.n === asked.n && print.digest === asked.digest) return undefined;
  const before = await recorded();
  if (!before) {
    return { kind: DivergenceKind.conversation, ...where, recorded: `a conversation of ${print.n} messages (its text is no longer kept)`, requested: `a different conversation of ${asked.n} messages` };
  }
  let i = 0;
  while (i < before.length && i < step.messages.length && canonicalJson(before[i]) === canonicalJson(step.messages[i])) i++;
  return { kind: DivergenceKind.conversation, ...where, message: i, recorded: `message ${i + 1} of ${before.length}: ${describeMessage(before[i])}`, requested: `message ${i + 1} of ${step.messages.length}: ${describeMessage(step.messages[i])}` };
}
