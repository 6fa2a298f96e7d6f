import { msg, parseToolArgs, type AssistantMessage, type Message, type ToolCall } from '../core/messages.js';
import type { ModelProvider, ModelRequest, ModelResponse, ToolSpec } from '../core/model.js';
import { providerFields, type ModelSettings } from '../core/model-settings.js';
import {
  apiKeyReader,
  checkPrices,
  costOf,
  modelError,
  modelNameCheck,
  normalizeBaseURL,
  parseJson,
  postJson,
  readSse,
  tokenSink,
  type ApiKeySource,
  type FetchLike,
  type ModelPrice,
  type TokenListener,
} from './http.js';

/** Options of {@link openAICompatible}. */
export interface OpenAICompatibleOptions {
  /** `https://api.openai.com/v1`, `http://127.0.0.1:11434/v1` (Ollama), a vLLM or LM Studio server… */
  baseURL: string;
  /** Registry id, the part before `:` in `openai:gpt-4o`. Default `openai`. */
  id?: string;
  /** The key, or a function reading it per call. Default: the `apiKeyEnv` variable. */
  apiKey?: ApiKeySource;
  /** Environment variable holding the key. Default `OPENAI_API_KEY`. Local servers need none. */
  apiKeyEnv?: string;
  /** Extra headers on every request (organisation, project, gateway routing). */
  headers?: Record<string, string>;
  /** Longest a call may take, streaming included. Default 120 000 ms. */
  timeoutMs?: number;
  /** Stream the answer (SSE) and report text through `onToken` as it arrives. Default `false`. */
  stream?: boolean;
  /** Called with each streamed piece of text. */
  onToken?: TokenListener;
  /** The model sent when an agent names just the provider (`openai`, i.e. `openai:default`). */
  defaultModel?: string;
  /** US dollars per million tokens, by model name, to put a cost on each call. */
  prices?: Record<string, ModelPrice>;
  /**
   * The body field an agent's `settings.maxOutputTokens` goes to. OpenAI's newer models take
   * only `max_completion_tokens`; most other servers know only the older `max_tokens`.
   * Default `max_completion_tokens` for api.openai.com, `max_tokens` elsewhere.
   */
  maxTokensField?: 'max_tokens' | 'max_completion_tokens';
  fetch?: FetchLike;
}

/** Wire shapes of the Chat Completions API, only the fields Troupe reads or writes. */
interface WireToolCall {
  id?: string;
  type?: 'function';
  function?: { name?: string; arguments?: string | Record<string, unknown> };
}
interface WireChoice {
  message?: { content?: string | null; tool_calls?: WireToolCall[] };
  finish_reason?: string | null;
}
interface WireCompletion {
  model?: string;
  choices?: WireChoice[];
  usage?: { prompt_tokens?: number; completion_tokens?: number } | null;
  error?: { message?: string };
}
interface WireChunk {
  model?: string;
  choices?: Array<{ delta?: { content?: string | null; tool_calls?: Array<WireToolCall & { index?: number }> }; finish_reason?: string | null }>;
  usage?: WireCompletion['usage'];
  error?: { message?: string };
}

/** OpenAI only accepts `name` on a message when it is a plain identifier. */
const NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/** Provider-neutral conversation → Chat Completions `messages`. */
export function toOpenAIMessages(messages: readonly Message[]): Array<Record<string, unknown>> {
  return messages.map((m) => {
    switch (m.role) {
      case 'system':
        return { role: 'system', content: m.content };
      case 'user':
        return m.name && NAME.test(m.name) ? { role: 'user', content: m.content, name: m.name } : { role: 'user', content: m.content };
      case 'assistant':
        if (!m.toolCalls?.length) return { role: 'assistant', content: m.content };
        return {
          role: 'assistant',
          content: m.content === '' ? null : m.content,
          // Unreadable arguments go back as the model wrote them, next to the error about them.
          tool_calls: m.toolCalls.map((c) => ({
            id: c.id,
            type: 'function',
            function: { name: c.name, arguments: c.argsError !== undefined && typeof c.args === 'string' ? c.args : JSON.stringify(c.args ?? {}) },
          })),
        };
      case 'tool':
        // The format has no error flag; the executor already words failures as "error: …".
        return { role: 'tool', tool_call_id: m.toolCallId, content: m.content };
    }
  });
}

/** Tool specs → Chat Completions `tools`. */
export function toOpenAITools(tools: readonly ToolSpec[]): Array<Record<string, unknown>> {
  return tools.map((t) => ({ type: 'function', function: { name: t.name, description: t.description, parameters: t.inputSchema } }));
}

/**
 * An agent's settings as Chat Completions fields: the standard ones, over which
 * `providerOptions.openai` and `providerOptions[id]` are laid (they may add fields, or set
 * one the standard settings do not cover), except the fields the provider itself owns.
 */
export function toOpenAISettings(settings: ModelSettings | undefined, options: { id?: string; maxTokensField?: 'max_tokens' | 'max_completion_tokens' } = {}): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  if (!settings) return fields;
  if (settings.temperature !== undefined) fields.temperature = settings.temperature;
  if (settings.maxOutputTokens !== undefined) fields[options.maxTokensField ?? 'max_tokens'] = settings.maxOutputTokens;
  if (settings.topP !== undefined) fields.top_p = settings.topP;
  if (settings.seed !== undefined) fields.seed = settings.seed;
  if (settings.stopSequences?.length) fields.stop = [...settings.stopSequences];
  return { ...fields, ...providerFields(settings, ['openai', options.id ?? 'openai'], ['model', 'messages', 'tools', 'stream', 'stream_options']) };
}

const FINISH: Record<string, ModelResponse['finishReason']> = { stop: 'stop', tool_calls: 'tool_calls', function_call: 'tool_calls', length: 'length', content_filter: 'error' };

/**
 * A provider speaking the OpenAI Chat Completions wire format (`POST {baseURL}/chat/completions`),
 * which OpenAI, Ollama, vLLM, LM Studio and most gateways serve; only `baseURL` differs.
 */
export function openAICompatible(options: OpenAICompatibleOptions): ModelProvider {
  if (!options || typeof options !== 'object') throw new TypeError('openAICompatible({ baseURL }) needs options');
  const id = options.id ?? 'openai';
  const o = {
    id,
    url: `${normalizeBaseURL(id, options.baseURL)}/chat/completions`,
    key: apiKeyReader(options.apiKey, options.apiKeyEnv ?? 'OPENAI_API_KEY'),
    headers: { ...options.headers },
    timeoutMs: options.timeoutMs ?? 120_000,
    stream: options.stream ?? false,
    onToken: options.onToken,
    defaultModel: options.defaultModel,
    prices: checkPrices(id, options.prices),
    maxTokensField: options.maxTokensField ?? (new URL(options.baseURL).hostname === 'api.openai.com' ? 'max_completion_tokens' : 'max_tokens'),
    fetch: options.fetch ?? ((input: string, init: RequestInit) => globalThis.fetch(input, init)),
  };
  if (!(o.timeoutMs > 0)) throw new TypeError(`${id}: timeoutMs must be a positive number of milliseconds`);
  if (o.maxTokensField !== 'max_tokens' && o.maxTokensField !== 'max_completion_tokens') throw new TypeError(`${id}: maxTokensField must be "max_tokens" or "max_completion_tokens"`);

  const toolCall = (call: WireToolCall, index: number): ToolCall => {
    const name = call.function?.name;
    if (!name) throw modelError(id, `tool call ${index} has no function name`, { retryable: false, reason: 'protocol' });
    // Some servers send no arguments for a tool without parameters, a few send an object;
    // broken JSON (common with small local models) is kept for the model to correct.
    return { id: call.id || `call_${index}`, name, ...parseToolArgs(call.function?.arguments) };
  };

  const finish = (request: ModelRequest, served: string | undefined, message: AssistantMessage, usage: WireCompletion['usage'], reason: string | null | undefined): ModelResponse => {
    const counts = { inputTokens: usage?.prompt_tokens ?? 0, outputTokens: usage?.completion_tokens ?? 0 };
    const cost = costOf(o.prices, [served ?? '', request.model], counts);
    const finishReason = (reason && FINISH[reason]) || (message.toolCalls?.length ? 'tool_calls' : 'stop');
    return { message, usage: counts, model: `${id}:${served ?? request.model}`, finishReason, ...(cost !== undefined ? { cost } : {}) };
  };

  return {
    id,
    check: modelNameCheck(id, o.defaultModel),
    async generate(request, context): Promise<ModelResponse> {
      const model = request.model === 'default' && o.defaultModel ? o.defaultModel : request.model;
      const apiKey = o.key();
      // The conversation, tools and streaming are the provider's to set: settings cannot replace them.
      const body: Record<string, unknown> = { ...toOpenAISettings(request.settings, { id, maxTokensField: o.maxTokensField }), model, messages: toOpenAIMessages(request.messages) };
      if (request.tools.length) body.tools = toOpenAITools(request.tools);
      if (o.stream) Object.assign(body, { stream: true, stream_options: { include_usage: true } });
      const { response, guard } = await postJson({
        provider: id,
        fetch: o.fetch,
        url: o.url,
        headers: { ...o.headers, ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) },
        body,
        signal: context.signal,
        timeoutMs: o.timeoutMs,
        apiKey,
      });

      if (!o.stream) {
        const json = parseJson(id, await guard(() => response.text()), 'response body') as WireCompletion;
        if (json.error) throw modelError(id, json.error.message ?? 'error without message', { retryable: false, reason: 'provider' });
        const choice = json.choices?.[0];
        if (!choice?.message) throw modelError(id, 'response has no choices[0].message', { retryable: false, reason: 'protocol' });
        const calls = (choice.message.tool_calls ?? []).map(toolCall);
        return finish(request, json.model, msg.assistant(choice.message.content ?? '', calls), json.usage, choice.finish_reason);
      }

      const emit = tokenSink(o.onToken, context, request);
      if (!response.body) throw modelError(id, 'streaming response has no body', { retryable: true, reason: 'protocol' });
      const body$ = response.body;
      // Tool calls arrive in pieces keyed by `index`: id and name first, then argument text.
      const calls = new Map<number, { id?: string; name: string; args: string }>();
      let text = '';
      let served: string | undefined;
      let usage: WireCompletion['usage'];
      let reason: string | null | undefined;
      let done = false;
      await guard(async () => {
        for await (const event of readSse(body$)) {
          if (event.data === '[DONE]') {
            done = true;
            break;
          }
          const chunk = parseJson(id, event.data, 'stream chunk') as WireChunk;
          if (chunk.error) throw modelError(id, chunk.error.message ?? 'error in stream', { retryable: true, reason: 'provider' });
          served = chunk.model ?? served;
          if (chunk.usage) usage = chunk.usage;
          for (const choice of chunk.choices ?? []) {
            if (choice.finish_reason) reason = choice.finish_reason;
            const delta = choice.delta;
            if (delta?.content) {
              text += delta.content;
              emit(delta.content);
            }
            for (const piece of delta?.tool_calls ?? []) {
              const index = piece.index ?? 0;
              const call = calls.get(index) ?? { name: '', args: '' };
              if (piece.id) call.id = piece.id;
              if (piece.function?.name) call.name += piece.function.name;
              if (typeof piece.function?.arguments === 'string') call.args += piece.function.arguments;
              calls.set(index, call);
            }
          }
        }
      });
      // A stream cut short (proxy, crash) must not pass for a finished answer.
      if (!done && !reason) throw modelError(id, 'stream ended before the answer was complete', { retryable: true, reason: 'network' });
      const toolCalls = [...calls.entries()]
        .sort(([a], [b]) => a - b)
        .map(([, c], i) => toolCall({ ...(c.id ? { id: c.id } : {}), function: { name: c.name, arguments: c.args } }, i));
      return finish(request, served, msg.assistant(text, toolCalls), usage, reason);
    },
  };
}
