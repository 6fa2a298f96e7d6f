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
      /** Fail this many attempts of the turn (a transient provider error) before answering. */
      failFirst?: number;
    };

/** A script: turns per agent id, or a function of the request. */
export type Script = Readonly<Record<string, readonly ScriptedTurn[]>> | ((request: ModelRequest) => ScriptedTurn);

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

/**
 * A deterministic, offline model. The turn it plays is chosen by how many assistant
 * messages the conversation already holds, never by an internal counter, so a resumed or
 * replayed conversation gets exactly the answers an uninterrupted one would.
 */
export function scriptedModel(options: ScriptedModelOptions): ModelProvider {
  if (!options || (typeof options.script !== 'function' && typeof options.script !== 'object')) {
    throw new TypeError('scriptedModel({ script }) needs turns per agent id or a function of the request');
  }
  const clock = options.clock ?? systemClock;
  const latency = options.latencyMs ?? 0;
  const failures = new Map<string, number>();

  const turnFor = (request: ModelRequest): ScriptedTurn => {
    const index = request.messages.filter((m) => m.role === 'assistant').length;
    if (typeof options.script === 'function') return options.script(request);
    const turns = options.script[request.agent];
    const turn = turns?.[index];
    if (turn === undefined) {
      throw new TroupeError(ErrorCode.MODEL_FAILED, `scripted model has no turn ${index + 1} for agent "${request.agent}"`, {
        details: { agent: request.agent, turn: index },
        retryable: false,
      });
    }
    return turn;
  };

  return {
    id: options.id ?? 'scripted',
    async generate(request, { signal }): Promise<ModelResponse> {
      // Like a real provider, an aborted call answers nothing (with latency, sleep rejects too).
      signal.throwIfAborted();
      if (latency > 0) await sleep(clock, latency, signal);
      const turn = turnFor(request);
      const index = request.messages.filter((m) => m.role === 'assistant').length;
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
      const calls: ToolCall[] =
        typeof turn === 'string' ? [] : (turn.toolCalls ?? []).map((c, i) => ({ id: c.id ?? `call_${index}_${i}`, name: c.name, ...parseToolArgs(c.args) }));
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
