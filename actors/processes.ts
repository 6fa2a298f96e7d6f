import { ErrorCode, TroupeError, type SerializedError } from '../core/errors.js';
import type { Policy } from '../core/policy.js';
import type { AgentDefinition } from './agent.js';

/**
 * The four ways a crew shares work, as pure functions of persisted state: the crew's root
 * machine calls them on start and on every agent reply, and does what they decide. Keeping
 * them pure keeps the machine small and every decision replayable from a snapshot.
 */

/** What the next agent of a sequential crew is asked, given the crew input and the previous output. */
export type TaskTemplate = (args: { input: string; previous: { agent: string; output: string } | null; agent: AgentDefinition }) => string;

/** One line of a group chat. */
export interface ChatLine {
  speaker: string;
  content: string;
}

/** Picks the next speaker of a group chat (must be deterministic: it is re-run on replay). */
export type SpeakerSelector = (args: { transcript: readonly ChatLine[]; agents: readonly string[]; round: number }) => string;

/** A resolved process configuration. */
export type ProcessConfig =
  | { kind: 'sequential'; taskTemplate: TaskTemplate }
  | { kind: 'hierarchical'; manager: string }
  | { kind: 'handoff'; entry: string; maxHandoffs: number; routes: Readonly<Record<string, readonly string[]>> }
  | {
      kind: 'groupChat';
      /** `roundRobin`, a function, or the id of an agent asked to name the next speaker. */
      selector: 'roundRobin' | SpeakerSelector | { agent: string };
      maxRounds: number;
      terminate: (line: ChatLine) => boolean;
      speakers: readonly string[];
    };

/** The persisted progress of a process. */
export interface ProcessState {
  input: string;
  index: number;
  outputs: Record<string, string>;
  transcript: ChatLine[];
  handoffs: number;
  /** Who answered last and what. */
  last: ChatLine | null;
}

/** What the crew should do next. */
export type Decision =
  | { type: 'dispatch'; agent: string; content: string; purpose: 'work' | 'select'; policy?: Policy }
  | { type: 'done'; output: string }
  | { type: 'fail'; error: SerializedError };

/** An agent's answer as the process sees it. */
export interface Reply {
  agent: string;
  output: string;
  purpose: 'work' | 'select';
  handoff?: { to: string; context: string; policy?: Policy };
}

export function initialProcessState(input: string): ProcessState {
  return { input, index: 0, outputs: {}, transcript: [], handoffs: 0, last: null };
}

const renderTranscript = (input: string, transcript: readonly ChatLine[]) =>
  [`Topic: ${input}`, '', ...transcript.map((l) => `${l.speaker}: ${l.content}`)].join('\n');

function nextSpeaker(config: Extract<ProcessConfig, { kind: 'groupChat' }>, state: ProcessState): Decision {
  const round = state.transcript.length;
  if (typeof config.selector === 'object') {
    return {
      type: 'dispatch',
      agent: config.selector.agent,
      purpose: 'select',
      content: `${renderTranscript(state.input, state.transcript)}\n\nWho should speak next? Answer with one name of: ${config.speakers.join(', ')}.`,
    };
  }
  const speaker =
    config.selector === 'roundRobin'
      ? config.speakers[round % config.speakers.length]!
      : config.selector({ transcript: state.transcript, agents: config.speakers, round });
  if (!config.speakers.includes(speaker)) {
    return { type: 'fail', error: new TroupeError(ErrorCode.INVALID_SPEAKER, `group chat selector chose "${speaker}", not one of ${config.speakers.join(', ')}`).toJSON() };
  }
  return { type: 'dispatch', agent: speaker, purpose: 'work', content: renderTranscript(state.input, state.transcript) };
}

/** The first decision of a run. */
export function startProcess(config: ProcessConfig, agents: readonly AgentDefinition[], state: ProcessState): Decision {
  switch (config.kind) {
    case 'sequential':
      return { type: 'dispatch', agent: agents[0]!.id, purpose: 'work', content: config.taskTemplate({ input: state.input, previous: null, agent: agents[0]! }) };
    case 'hierarchical':
      return { type: 'dispatch', agent: config.manager, purpose: 'work', content: state.input };
    case 'handoff':
      return { type: 'dispatch', agent: config.entry, purpose: 'work', content: state.input };
    case 'groupChat':
      return nextSpeaker(config, state);
  }
}

/** Folds an agent's reply into the state and decides what comes next. */
export function advanceProcess(config: ProcessConfig, agents: readonly AgentDefinition[], state: ProcessState, reply: Reply): { state: ProcessState; decision: Decision } {
  const line = { speaker: reply.agent, content: reply.output };
  const next: ProcessState = { ...state, outputs: { ...state.outputs, [reply.agent]: reply.output }, last: line };
  switch (config.kind) {
    case 'sequential': {
      next.index = state.index + 1;
      const agent = agents[next.index];
      if (!agent) return { state: next, decision: { type: 'done', output: reply.output } };
      return { state: next, decision: { type: 'dispatch', agent: agent.id, purpose: 'work', content: config.taskTemplate({ input: state.input, previous: { agent: reply.agent, output: reply.output }, agent }) } };
    }
    case 'hierarchical':
      return { state: next, decision: { type: 'done', output: reply.output } };
    case 'handoff': {
      if (!reply.handoff) return { state: next, decision: { type: 'done', output: reply.output } };
      next.handoffs = state.handoffs + 1;
      next.transcript = [...state.transcript, line];
      if (next.handoffs > config.maxHandoffs) {
        return { state: next, decision: { type: 'fail', error: new TroupeError(ErrorCode.MAX_HANDOFFS, `more than ${config.maxHandoffs} handoffs; last from ${reply.agent} to ${reply.handoff.to}`).toJSON() } };
      }
      const content = `${state.input}\n\nHanded off by ${reply.agent}: ${reply.handoff.context}`;
      const policy = reply.handoff.policy;
      return { state: next, decision: { type: 'dispatch', agent: reply.handoff.to, purpose: 'work', content, ...(policy ? { policy } : {}) } };
    }
    case 'groupChat': {
      if (reply.purpose === 'select') {
        const pick = config.speakers.find((s) => new RegExp(`\\b${s}\\b`, 'i').test(reply.output));
        if (!pick) {
          return { state, decision: { type: 'fail', error: new TroupeError(ErrorCode.INVALID_SPEAKER, `selector ${reply.agent} named no speaker: "${reply.output.slice(0, 80)}"`).toJSON() } };
        }
        return { state, decision: { type: 'dispatch', agent: pick, purpose: 'work', content: renderTranscript(state.input, state.transcript) } };
      }
      next.transcript = [...state.transcript, line];
      if (config.terminate(line) || next.transcript.length >= config.maxRounds) {
        return { state: next, decision: { type: 'done', output: reply.output } };
      }
      return { state: next, decision: nextSpeaker(config, next) };
    }
  }
}
