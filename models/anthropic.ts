import { checkToolArgs, msg, parseToolArgs, type AssistantMessage, type Message, type ToolCall } from '../core/messages.js';
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

/** Options of {@link anthropic}. */
export interface AnthropicOptions {
  /** Registry id, the part before `:` in `anthropic:claude-sonnet-4-5`. Default `anthropic`. */
  id?: string;
  /** Default `https://api.anthropic.com`; requests go to `{baseURL}/v1/messages`. */
  baseURL?: string;
  /** The key, or a function reading it per call. Default: the `apiKeyEnv` variable. */
  apiKey?: ApiKeySource;
  /** Environment variable holding the key. Default `ANTHROPIC_API_KEY`. */
  apiKeyEnv?: string;
  /** The `anthropic-version` header. Default `2023-06-01`. */
  version?: string;
  /** `max_tokens` of every call (the API requires one) unless an agent's `settings.maxOutputTokens` says. Default 1024. */
  maxTokens?: number;
  /** Extra headers on every request (`anthropic-beta`, gateway routing). */
  headers?: Record<string, string>;
  /** Longest a call may take, streaming included. Default 120 000 ms. */
  timeoutMs?: number;
  /** Stream the answer (SSE) and report text through `onToken` as it arrives. Default `false`. */
  stream?: boolean;
  /** Called with each streamed piece of text. */
  onToken?: TokenListener;
  /** The model sent when an agent names just the provider (`anthropic:default`). */
  defaultModel?: string;
  /** US dollars per million tokens, by model name. */
  prices?: Record<string, ModelPrice>;
  fetch?: FetchLike;
}

/** Content blocks of the Messages API that Troupe reads or writes. */
type Block =
  | { type: 'text'; text: string }
  | { type: 'tool_use'; id: string; name: string; input: unknown }
  | { type: 'tool_result'; tool_use_id: string; content: string; is_error?: boolean };
interface WireUsage {
  input_tokens?: number;
  output_tokens?: number;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
}
interface StreamEvent {
  type?: string;
  index?: number;
  message?: { model?: string; usage?: WireUsage };
  content_block?: { type: string; text?: string; id?: string; name?: string };
  delta?: { type?: string; text?: string; partial_json?: string; stop_reason?: string | null };
  usage?: WireUsage;
  error?: { type?: string; message?: string };
}
interface WireMessage {
  model?: string;
  content?: Array<{ type: string; text?: string; id?: string; name?: string; input?: unknown }>;
  stop_reason?: string | null;
  usage?: WireUsage;
}

/**
 * Provider-neutral conversation → `system` plus alternating `messages`. Tool results travel
 * as `tool_result` blocks inside a user turn, and the API rejects two turns of one role in a
 * row, so neighbouring turns of the same role are merged.
 */
export function toAnthropicMessages(messages: readonly Message[]): { system: string | undefined; messages: Array<{ role: 'user' | 'assistant'; content: Block[] }> } {
  const system: string[] = [];
  const turns: Array<{ role: 'user' | 'assistant'; content: Block[] }> = [];
  const push = (role: 'user' | 'assistant', blocks: Block[]) => {
    if (!blocks.length) return;
    const last = turns.at(-1);
    if (last?.role === role) last.content.push(...blocks);
    else turns.push({ role, content: blocks });
  };
  for (const m of messages) {
    if (m.role === 'system') system.push(m.content);
    else if (m.role === 'user') push('user', m.content ? [{ type: 'text', text: m.content }] : []);
    else if (m.role === 'tool') push('user', [{ type: 'tool_result', tool_use_id: m.toolCallId, content: m.content, ...(m.isError ? { is_error: true } : {}) }]);
    else {
      // Empty text blocks are rejected by the API, so text is sent only when there is some.
      const blocks: Block[] = m.content ? [{ type: 'text', text: m.content }] : [];
      // `input` must be an object: unreadable arguments travel as `{}`, their text is in the
      // error tool result that answers the call.
      for (const c of m.toolCalls ?? []) blocks.push({ type: 'tool_use', id: c.id, name: c.name, input: c.argsError !== undefined ? {} : (c.args ?? {}) });
      push('assistant', blocks);
    }
  }
  return { system: system.length ? system.join('\n\n') : undefined, messages: turns };
}

/** Tool specs → Messages API `tools`. */
export function toAnthropicTools(tools: readonly ToolSpec[]): Array<Record<string, unknown>> {
  return tools.map((t) => ({ name: t.name, description: t.description, input_schema: t.inputSchema }));
}

/**
 * An agent's settings as Messages API fields (the API has no seed), with
 * `providerOptions.anthropic` and `providerOptions[id]` laid over them.
 */
export function toAnthropicSettings(settings: ModelSettings | undefined, id = 'anthropic'): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  if (!settings) return fields;
  if (settings.temperature !== undefined) fields.temperature = settings.temperature;
  if (settings.maxOutputTokens !== undefined) fields.max_tokens = settings.maxOutputTokens;
  if (settings.topP !== undefined) fields.top_p = settings.topP;
  if (settings.stopSequences?.length) fields.stop_sequences = [...settings.stopSequences];
  return { ...fields, ...providerFields(settings, ['anthropic', id], ['model', 'messages', 'system', 'tools', 'stream']) };
}

const STOP: Record<string, ModelResponse['finishReason']> = { end_turn: 'stop', stop_sequence: 'stop', tool_use: 'tool_calls', max_tokens: 'length', refusal: 'error' };

/** Error types the API may send mid-stream that are worth another try. */
const TRANSIENT = new Set(['overloaded_error', 'api_error', 'rate_limit_error', 'timeout_error']);

/** A provider speaking the Anthropic Messages API (`POST {baseURL}/v1/messages`). */
export function anthropic(options: AnthropicOptions = {}): ModelProvider {
  const id = options.id ?? 'anthropic';
  const o = {
    id,
    url: `${normalizeBaseURL(id, options.baseURL ?? 'https://api.anthropic.com')}/v1/messages`,
    key: apiKeyReader(options.apiKey, options.apiKeyEnv ?? 'ANTHROPIC_API_KEY'),
    keyEnv: options.apiKeyEnv ?? 'ANTHROPIC_API_KEY',
    version: options.version ?? '2023-06-01',
    maxTokens: options.maxTokens ?? 1024,
    headers: { ...options.headers },
    timeoutMs: options.timeoutMs ?? 120_000,
    stream: options.stream ?? false,
    onToken: options.onToken,
    defaultModel: options.defaultModel,
    prices: checkPrices(id, options.prices),
    fetch: options.fetch ?? ((input: string, init: RequestInit) => globalThis.fetch(input, init)),
  };
  if (!Number.isInteger(o.maxTokens) || o.maxTokens < 1) throw new TypeError(`${id}: maxTokens must be a positive integer`);
  if (!(o.timeoutMs > 0)) throw new TypeError(`${id}: timeoutMs must be a positive number of milliseconds`);


  const finish = (request: ModelRequest, served: string | undefined, message: AssistantMessage, usage: WireUsage, reason: string | null | undefined): ModelResponse => {
    // Cached prompt tokens are still prompt tokens; counting them keeps budgets honest.
    const counts = {
      inputTokens: (usage.input_tokens ?? 0) + (usage.cache_creation_input_tokens ?? 0) + (usage.cache_read_input_tokens ?? 0),
      outputTokens: usage.output_tokens ?? 0,
    };
    const cost = costOf(o.prices, [served ?? '', request.model], counts);
    const finishReason = (reason && STOP[reason]) || (message.toolCalls?.length ? 'tool_calls' : 'stop');
    return { message, usage: counts, model: `${id}:${served ?? request.model}`, finishReason, ...(cost !== undefined ? { cost } : {}) };
  };

  return {
    id,
    check: modelNameCheck(id, o.defaultModel),
    async generate(request, context): Promise<ModelResponse> {
      const apiKey = o.key();
      if (!apiKey) throw modelError(id, `no API key: pass apiKey or set ${o.keyEnv}`, { retryable: false, reason: 'config' });
      const { system, messages } = toAnthropicMessages(request.messages);
      // The conversation, tools and streaming are the provider's to set: settings cannot replace them.
      const body: Record<string, unknown> = {
        max_tokens: o.maxTokens,
        ...toAnthropicSettings(request.settings, id),
        model: request.model === 'default' && o.defaultModel ? o.defaultModel : request.model,
        messages,
      };
      if (system !== undefined) body.system = system;
      if (request.tools.length) body.tools = toAnthropicTools(request.tools);
      if (o.stream) body.stream = true;
      const { response, guard } = await postJson({
        provider: id,
        fetch: o.fetch,
        url: o.url,
        headers: { ...o.headers, 'x-api-key': apiKey, 'anthropic-version': o.version },
        body,
        signal: context.signal,
        timeoutMs: o.timeoutMs,
        apiKey,
      });

      if (!o.stream) {
        const json = parseJson(id, await guard(() => response.text()), 'response body') as WireMessage;
        if (!Array.isArray(json.content)) throw modelError(id, 'response has no content blocks', { retryable: false, reason: 'protocol' });
        let text = '';
        const calls: ToolCall[] = [];
        for (const block of json.content) {
          if (block.type === 'text') text += block.text ?? '';
          else if (block.type === 'tool_use') calls.push({ id: block.id ?? `toolu_${calls.length}`, name: block.name ?? '', ...checkToolArgs(block.input) });
        }
        return finish(request, json.model, msg.assistant(text, calls), json.usage ?? {}, json.stop_reason);
      }

      if (!response.body) throw modelError(id, 'streaming response has no body', { retryable: true, reason: 'protocol' });
      const stream = response.body;
      const emit = tokenSink(o.onToken, context, request);
      // Blocks arrive by index: text grows by text_delta, tool input by partial JSON.
      const blocks = new Map<number, { type: 'text'; text: string } | { type: 'tool_use'; id: string; name: string; json: string }>();
      const usage: WireUsage = {};
      let served: string | undefined;
      let reason: string | null | undefined;
      let stopped = false;
      await guard(async () => {
        for await (const event of readSse(stream)) {
          const data = parseJson(id, event.data, 'stream event') as StreamEvent;
          switch (data.type ?? event.event) {
            case 'message_start':
              served = data.message?.model;
              Object.assign(usage, data.message?.usage);
              break;
            case 'content_block_start': {
              const block = data.content_block ?? { type: '' };
              const index = data.index ?? 0;
              if (block.type === 'text') {
                blocks.set(index, { type: 'text', text: block.text ?? '' });
                if (block.text) emit(block.text);
              } else if (block.type === 'tool_use') blocks.set(index, { type: 'tool_use', id: block.id ?? `toolu_${index}`, name: block.name ?? '', json: '' });
              break;
            }
            case 'content_block_delta': {
              const block = blocks.get(data.index ?? 0);
              if (data.delta?.type === 'text_delta' && block?.type === 'text') {
                block.text += data.delta.text ?? '';
                emit(data.delta.text ?? '');
              } else if (data.delta?.type === 'input_json_delta' && block?.type === 'tool_use') block.json += data.delta.partial_json ?? '';
              break;
            }
            case 'message_delta':
              if (data.delta?.stop_reason) reason = data.delta.stop_reason;
              Object.assign(usage, data.usage);
              break;
            case 'message_stop':
              stopped = true;
              break;
            case 'error': {
              const type = String(data.error?.type ?? 'error');
              throw modelError(id, `${type}: ${data.error?.message ?? 'error in stream'}`, { retryable: TRANSIENT.has(type), reason: 'provider' });
            }
          }
          if (stopped) break;
        }
      });
      if (!stopped) throw modelError(id, 'stream ended before message_stop', { retryable: true, reason: 'network' });
      let text = '';
      const calls: ToolCall[] = [];
      for (const [, block] of [...blocks.entries()].sort(([a], [b]) => a - b)) {
        if (block.type === 'text') text += block.text;
        else calls.push({ id: block.id, name: block.name, ...parseToolArgs(block.json) });
      }
      return finish(request, served, msg.assistant(text, calls), usage, reason);
    },
  };
}
