/**
 * The AI SDK bridge: any AI SDK language model (`LanguageModelV3` of `@ai-sdk/provider` 3,
 * what `@ai-sdk/openai`, `@ai-sdk/anthropic`, `@ai-sdk/google`… return) as a Troupe
 * `ModelProvider`. `@ai-sdk/provider` is imported for its types only, so this module loads
 * without it; the model object you pass is all it needs at run time.
 * @module troupe/ai-sdk
 */
import type {
  JSONSchema7,
  LanguageModelV3,
  LanguageModelV3CallOptions,
  LanguageModelV3Content,
  LanguageModelV3FinishReason,
  LanguageModelV3FunctionTool,
  LanguageModelV3Message,
  LanguageModelV3StreamPart,
  LanguageModelV3Usage,
} from '@ai-sdk/provider';
import { ErrorCode, TroupeError } from '../core/errors.js';
import { parseToolArgs, type AssistantMessage, type Message, type ToolCall } from '../core/messages.js';
import type { ModelCallContext, ModelProvider, ModelRequest, ModelResponse, ToolSpec } from '../core/model.js';
import { checkPrices, costOf, isRetryableStatus, modelError, parseRetryAfter, tokenSink, type ModelPrice, type TokenListener } from './http.js';

/** Options of {@link aiSdkModel}. */
export interface AiSdkModelOptions {
  /** Registry id, the part before `:` in an agent's `model` (`ai:default`). Default `ai-sdk`. */
  id?: string;
  /** Call `doStream` and report text through `onToken` as it arrives. Default `false` (`doGenerate`). */
  stream?: boolean;
  /** Called with each streamed piece of text. */
  onToken?: TokenListener;
  /** Extra HTTP headers on every call (the AI SDK's `headers` call option). */
  headers?: Record<string, string>;
  /** US dollars per million tokens, by model id, to put a cost on each call. */
  prices?: Record<string, ModelPrice>;
}

/** Provider-neutral conversation → AI SDK prompt. */
export function toAiSdkPrompt(messages: readonly Message[]): LanguageModelV3Message[] {
  return messages.map((m): LanguageModelV3Message => {
    switch (m.role) {
      case 'system':
        return { role: 'system', content: m.content };
      case 'user':
        return { role: 'user', content: [{ type: 'text', text: m.content }] };
      case 'assistant':
        return {
          role: 'assistant',
          content: [
            // Empty text parts are refused by some providers behind the SDK (Anthropic's).
            ...(m.content ? [{ type: 'text' as const, text: m.content }] : []),
            // Unreadable arguments travel as `{}`; their text is in the error result that answers the call.
            ...(m.toolCalls ?? []).map((c) => ({ type: 'tool-call' as const, toolCallId: c.id, toolName: c.name, input: c.argsError !== undefined ? {} : (c.args ?? {}) })),
          ],
        };
      case 'tool':
        return {
          role: 'tool',
          content: [{ type: 'tool-result', toolCallId: m.toolCallId, toolName: m.name, output: m.isError ? { type: 'error-text', value: m.content } : { type: 'text', value: m.content } }],
        };
    }
  });
}

/** Tool specs → AI SDK function tools. */
export function toAiSdkTools(tools: readonly ToolSpec[]): LanguageModelV3FunctionTool[] {
  return tools.map((t) => ({ type: 'function', name: t.name, description: t.description, inputSchema: t.inputSchema as JSONSchema7 }));
}

const FINISH: Record<LanguageModelV3FinishReason['unified'], ModelResponse['finishReason'] | undefined> = {
  stop: 'stop',
  length: 'length',
  'tool-calls': 'tool_calls',
  'content-filter': 'error',
  error: 'error',
  other: undefined,
};

/** Errors of the AI SDK that no retry can fix: the request itself is wrong. */
const FINAL_ERRORS = new Set(['AI_InvalidPromptError', 'AI_InvalidArgumentError', 'AI_UnsupportedFunctionalityError', 'AI_LoadAPIKeyError', 'AI_LoadSettingError', 'AI_NoSuchModelError', 'AI_TypeValidationError']);

/**
 * Anything an AI SDK model threw → `MODEL_FAILED`. An `APICallError` (read by its fields,
 * so the error classes need not be loaded) is retryable on a transient status (429, 5xx)
 * with the server's `Retry-After`; errors that say whether they are retryable are taken at
 * their word; request errors are final; the rest is unknown, which the agent retries.
 */
export function fromAiSdkError(provider: string, error: unknown): TroupeError {
  if (error instanceof TroupeError) return error;
  const e = (error ?? {}) as { name?: unknown; message?: unknown; statusCode?: unknown; isRetryable?: unknown; responseHeaders?: unknown };
  const message = typeof e.message === 'string' && e.message ? e.message : String(error);
  if (typeof e.statusCode === 'number') {
    const headers = e.responseHeaders && typeof e.responseHeaders === 'object' ? new Headers(e.responseHeaders as Record<string, string>) : new Headers();
    const retryAfterMs = parseRetryAfter(headers);
    return modelError(provider, `HTTP ${e.statusCode}: ${message}`, { retryable: isRetryableStatus(e.statusCode), status: e.statusCode, reason: 'http', ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) }, error);
  }
  if (typeof e.isRetryable === 'boolean') return modelError(provider, message, { retryable: e.isRetryable, reason: 'network' }, error);
  if (typeof e.name === 'string' && FINAL_ERRORS.has(e.name)) return modelError(provider, message, { retryable: false, reason: 'request' }, error);
  // Unknown: neither promised retryable nor final, which the agent treats as worth a retry.
  return new TroupeError(ErrorCode.MODEL_FAILED, `${provider}: ${message}`, { cause: error, details: { provider, reason: 'provider' } });
}

const usageOf = (usage: LanguageModelV3Usage | undefined) => ({ inputTokens: usage?.inputTokens.total ?? 0, outputTokens: usage?.outputTokens.total ?? 0 });

/**
 * Turns an AI SDK language model into a Troupe model provider: the conversation and tool
 * specs go in as the SDK's prompt and function tools, tool calls come back as Troupe tool
 * calls, an agent's `settings` become the SDK's call options (`providerOptions` passed as
 * they are), the run's abort signal is the call's, and failures are `MODEL_FAILED` errors
 * saying whether a retry may help. The model reference is `<id>:default` or `<id>:<modelId>`.
 *
 * @example
 * import { openai } from '@ai-sdk/openai';
 * import { aiSdkModel } from 'troupe/ai-sdk';
 *
 * const node = await createNode({ storage, models: { ai: aiSdkModel(openai('gpt-4o-mini'), { id: 'ai', stream: true }) } });
 * const writer = agent({ id: 'writer', role: 'Writes', instructions: 'Write.', model: 'ai', settings: { temperature: 0.2 } });
 */
export function aiSdkModel(model: LanguageModelV3, options: AiSdkModelOptions = {}): ModelProvider {
  if (!model || typeof model !== 'object' || typeof model.doGenerate !== 'function' || typeof model.doStream !== 'function') {
    throw new TypeError('aiSdkModel(model) needs an AI SDK language model (an object with doGenerate and doStream)');
  }
  if (model.specificationVersion !== 'v3') {
    throw new TypeError(`aiSdkModel(model) speaks the AI SDK's language model specification v3 (ai@6, @ai-sdk/provider@3); this model implements "${String(model.specificationVersion)}"`);
  }
  const id = options.id ?? 'ai-sdk';
  const prices = checkPrices(id, options.prices);
  const stream = options.stream ?? false;

  const callOptions = (request: ModelRequest, signal: AbortSignal): LanguageModelV3CallOptions => {
    const s = request.settings;
    return {
      prompt: toAiSdkPrompt(request.messages),
      ...(request.tools.length ? { tools: toAiSdkTools(request.tools), toolChoice: { type: 'auto' as const } } : {}),
      ...(s?.temperature !== undefined ? { temperature: s.temperature } : {}),
      ...(s?.maxOutputTokens !== undefined ? { maxOutputTokens: s.maxOutputTokens } : {}),
      ...(s?.topP !== undefined ? { topP: s.topP } : {}),
      ...(s?.seed !== undefined ? { seed: s.seed } : {}),
      ...(s?.stopSequences?.length ? { stopSequences: [...s.stopSequences] } : {}),
      ...(s?.providerOptions ? { providerOptions: s.providerOptions as LanguageModelV3CallOptions['providerOptions'] } : {}),
      ...(options.headers ? { headers: { ...options.headers } } : {}),
      abortSignal: signal,
    };
  };

  const finish = (request: ModelRequest, served: string | undefined, text: string, calls: ToolCall[], usage: LanguageModelV3Usage | undefined, reason: LanguageModelV3FinishReason | undefined): ModelResponse => {
    const counts = usageOf(usage);
    const message: AssistantMessage = calls.length ? { role: 'assistant', content: text, toolCalls: calls } : { role: 'assistant', content: text };
    const finishReason = (reason && FINISH[reason.unified]) || (calls.length ? 'tool_calls' : 'stop');
    const cost = costOf(prices, [served ?? model.modelId, request.model], counts);
    return { message, usage: counts, model: `${id}:${served ?? model.modelId}`, finishReason, ...(cost !== undefined ? { cost } : {}) };
  };

  const toolCall = (part: { toolCallId: string; toolName: string; input: string }, index: number): ToolCall => ({ id: part.toolCallId || `call_${index}`, name: part.toolName, ...parseToolArgs(part.input) });

  /** Runs `work`, turning whatever it throws into the abort reason (when aborted) or a Troupe error. */
  const guarded = async <T>(signal: AbortSignal, work: () => Promise<T>): Promise<T> => {
    signal.throwIfAborted();
    try {
      const result = await work();
      // A model that ignores the signal must not hand a stopped run an answer.
      signal.throwIfAborted();
      return result;
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      throw fromAiSdkError(id, error);
    }
  };

  const generate = (request: ModelRequest, context: ModelCallContext) =>
    guarded(context.signal, async () => {
      const result = await model.doGenerate(callOptions(request, context.signal));
      let text = '';
      const calls: ToolCall[] = [];
      for (const part of result.content as LanguageModelV3Content[]) {
        if (part.type === 'text') text += part.text;
        // Tools the provider ran itself (web search) are its business, not the agent's.
        else if (part.type === 'tool-call' && !part.providerExecuted) calls.push(toolCall(part, calls.length));
      }
      return finish(request, result.response?.modelId, text, calls, result.usage, result.finishReason);
    });

  const streamed = (request: ModelRequest, context: ModelCallContext) =>
    guarded(context.signal, async () => {
      const { stream: parts } = await model.doStream(callOptions(request, context.signal));
      const emit = tokenSink(options.onToken, context, request);
      const reader = parts.getReader();
      // Cancelling the stream is how a consumer tells the model to stop producing.
      const stop = () => void reader.cancel(context.signal.reason).catch(() => {});
      context.signal.addEventListener('abort', stop, { once: true });
      let text = '';
      const calls: ToolCall[] = [];
      let served: string | undefined;
      let usage: LanguageModelV3Usage | undefined;
      let reason: LanguageModelV3FinishReason | undefined;
      let finished = false;
      try {
        while (true) {
          const { done, value } = await reader.read();
          if (done) break;
          const part = value as LanguageModelV3StreamPart;
          if (part.type === 'text-delta') {
            text += part.delta;
            emit(part.delta);
          } else if (part.type === 'tool-call' && !part.providerExecuted) calls.push(toolCall(part, calls.length));
          else if (part.type === 'response-metadata') served = part.modelId ?? served;
          else if (part.type === 'finish') {
            finished = true;
            usage = part.usage;
            reason = part.finishReason;
          } else if (part.type === 'error') throw part.error;
        }
      } finally {
        context.signal.removeEventListener('abort', stop);
        reader.releaseLock();
      }
      context.signal.throwIfAborted();
      // A stream cut short must not pass for a finished answer.
      if (!finished) throw modelError(id, 'stream ended before the answer was complete', { retryable: true, reason: 'network' });
      return finish(request, served, text, calls, usage, reason);
    });

  return {
    id,
    check(name) {
      if (name === 'default' || name === model.modelId) return undefined;
      return `provider "${id}" serves the AI SDK model "${model.modelId}" only; write "${id}" or "${id}:${model.modelId}", not "${id}:${name}"`;
    },
    generate: (request, context) => (stream ? streamed(request, context) : generate(request, context)),
  };
}
