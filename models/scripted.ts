import { sleep, systemClock, type Clock } from '../core/clock.js';
import { ErrorCode, TroupeError } from '../core/errors.js';
import { msg, parseToolArgs, type ToolCall } from '../core/messages.js';
import type { ModelProvider, ModelRequest, ModelResponse } from '../core/model.js';

/** One scripted assistant turn: plain text, or text with tool calls. */
export type ScriptedTurn =
  | string
  | {
      text?: string;
      /**
       * `args` is an object, or argument text as a model sends it on the wire, read like a
       * real provider's (so broken JSON can be scripted too).
       */
      toolCalls?: ReadonlyArray<{ name: string; args: unknown; id?: string }>;
      /**
       * Fail this many attempts of the turn (a transient provider error) before answering.
       * Counted in this provider's memory, per run, agent and turn: a new process (a resume)
       * counts from 0 again, like a provider whose outage outlasted the crash.
       */
      failFirst?: number;
    };

/** What the function form of a {@link Script} is told besides the request. */
export interface ScriptedCall {
  /**
   * The 0-based turn of the agent in the run, the index the record form plays: its answers
   * in earlier completed tasks (`request.priorTurns`) plus the assistant messages of this
   * conversation.
   */
  turn: number;
}

/** A script: turns per agent id, or a function of the request. */
export type Script = Readonly<Record<string, readonly ScriptedTurn[]>> | ((request: ModelRequest, call: ScriptedCall) => ScriptedTurn);

/** Options of {@link scriptedModel}. */
export interface ScriptedModelOptions {
  script: Script;
  /** Registry id. Default `scripted`. */
  id?: string;
  /** Simulated latency per call, on `clock`. Default 0. */
  latencyMs?: number;
  clock?: Clock;
}

/** Rough token estimate (4 characters a token) so budgets and journals have numbers. */
const tokens = (text: string) => Math.ceil(text.length / 4);

/** Assistant messages of the conversation so far: the agent's answers in the current task. */
const answered = (request: ModelRequest) => {
  // Counted without a filtered copy: a long conversation is walked at every call.
  let n = 0;
  for (const m of request.messages) if (m.role === 'assistant') n++;
  return n;
};

/**
 * A deterministic, offline model. The turn it plays is the agent's turn in the run: its
 * answers in earlier completed tasks (`request.priorTurns`, checkpointed with the agent)
 * plus the assistant messages of the conversation, never an internal counter, so a group
 * chat speaker moves on each round and a resumed or replayed run gets exactly the answers
 * an uninterrupted one would.
 */
export function scriptedModel(options: ScriptedModelOptions): ModelProvider {
  if (!options || (typeof options.script !== 'function' && typeof options.script !== 'object')) {
    throw new TypeError('scriptedModel({ script }) needs turns per agent id or a function of the request');
  }
  const clock = options.clock ?? systemClock;
  const latency = options.latencyMs ?? 0;
  const failures = new Map<string, number>();

  const turnFor = (request: ModelRequest, turn: number): ScriptedTurn => {
    if (typeof options.script === 'function') return options.script(request, { turn });
    const chosen = options.script[request.agent]?.[turn];
    if (chosen === undefined) {
      throw new TroupeError(ErrorCode.MODEL_FAILED, `scripted model has no turn ${turn + 1} for agent "${request.agent}"`, {
        details: { agent: request.agent, turn },
        retryable: false,
      });
    }
    return chosen;
  };

  return {
    id: options.id ?? 'scripted',
    async generate(request, { signal }): Promise<ModelResponse> {
      // Like a real provider, an aborted call answers nothing (with latency, sleep rejects too).
      signal.throwIfAborted();
      if (latency > 0) await sleep(clock, latency, signal);
      const inTask = answered(request);
      const index = (request.priorTurns ?? 0) + inTask;
      const turn = turnFor(request, index);
      if (typeof turn === 'object' && turn.failFirst) {
        const key = `${request.runId}/${request.agent}/${index}`;
        const failed = failures.get(key) ?? 0;
        if (failed < turn.failFirst) {
          failures.set(key, failed + 1);
          throw new TroupeError(ErrorCode.MODEL_FAILED, `scripted transient failure ${failed + 1}/${turn.failFirst}`, {
            retryable: true,
          });
        }
      }
      const text = typeof turn === 'string' ? turn : (turn.text ?? '');
      // Ids only need to be unique within the conversation; numbered per task they stay what they were.
      const calls: ToolCall[] =
        typeof turn === 'string' ? [] : (turn.toolCalls ?? []).map((c, i) => ({ id: c.id ?? `call_${inTask}_${i}`, name: c.name, ...parseToolArgs(c.args) }));
      const prompt = request.messages.reduce((n, m) => n + tokens(m.content), 0);
      return {
        message: msg.assistant(text, calls),
        usage: { inputTokens: prompt, outputTokens: tokens(text) + calls.length * 8 },
        model: `${options.id ?? 'scripted'}:${request.model}`,
        finishReason: calls.length ? 'tool_calls' : 'stop',
      };
    },
  };
}
