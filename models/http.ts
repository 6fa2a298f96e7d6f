import { ErrorCode, TroupeError } from '../core/errors.js';
import type { ModelCallContext, ModelRequest } from '../core/model.js';

/**
 * HTTP plumbing shared by the real providers: one POST with the caller's abort signal and a
 * timeout, status-to-error mapping with `Retry-After`, and a Server-Sent Events reader.
 * Kept vendor-neutral so OpenAI-compatible and Anthropic providers fail the same way.
 */

/** The `fetch` a provider uses; the global one unless a test or proxy injects another. */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

/** An API key, or a function reading it at call time (key rotation, secrets managers). */
export type ApiKeySource = string | (() => string | undefined);

/** Statuses worth trying again (or elsewhere): rate limits, timeouts, conflicts, server errors. */
const RETRYABLE_STATUS = new Set([408, 409, 425, 429]);

/** Whether an HTTP status is transient. */
export function isRetryableStatus(status: number): boolean {
  return RETRYABLE_STATUS.has(status) || status >= 500;
}

/** Returns a reader of the key: explicit value or function first, then the environment. */
export function apiKeyReader(apiKey: ApiKeySource | undefined, env: string): () => string | undefined {
  if (apiKey !== undefined && typeof apiKey !== 'string' && typeof apiKey !== 'function') {
    throw new TypeError('apiKey must be a string or a function returning one');
  }
  return () => {
    const key = typeof apiKey === 'function' ? apiKey() : (apiKey ?? process.env[env]);
    return key ? key : undefined;
  };
}

/** Validates a base URL and drops trailing slashes so paths can be appended. */
export function normalizeBaseURL(provider: string, baseURL: unknown): string {
  if (typeof baseURL !== 'string' || !/^https?:\/\/[^/]/.test(baseURL)) {
    throw new TypeError(`${provider}: baseURL must be an http(s) URL, got ${JSON.stringify(baseURL)}`);
  }
  new URL(baseURL); // throws TypeError on anything URL cannot parse
  return baseURL.replace(/\/+$/, '');
}

/**
 * Milliseconds a server asked us to wait: `retry-after-ms` (OpenAI), else `Retry-After` as
 * seconds or an HTTP date. `undefined` when absent or unreadable.
 */
export function parseRetryAfter(headers: Headers, now = Date.now()): number | undefined {
  const ms = headers.get('retry-after-ms');
  if (ms !== null && ms.trim() !== '' && Number.isFinite(Number(ms))) return Math.max(0, Math.round(Number(ms)));
  const value = headers.get('retry-after')?.trim();
  if (!value) return undefined;
  if (/^\d+(\.\d+)?$/.test(value)) return Math.round(Number(value) * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** Removes the key from text a server echoed back (some echo it, masked or not). */
function redact(text: string, key: string | undefined): string {
  return key && key.length >= 4 ? text.split(key).join('[redacted]') : text;
}

/** The provider's own words from an error body: `{ error: { message } }` or plain text. */
function errorText(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: { message?: unknown } | string; message?: unknown };
    const message = typeof parsed.error === 'string' ? parsed.error : (parsed.error?.message ?? parsed.message);
    if (typeof message === 'string' && message) return message;
  } catch {
    // not JSON: fall through to the raw text
  }
  return body.trim().slice(0, 500) || '(empty body)';
}

/**
 * Builds the MODEL_FAILED error of a failed HTTP exchange: `retryable` and `retryAfterMs`
 * become the error's own fields, `provider`, `reason` and `status` its details.
 */
export function modelError(provider: string, message: string, facts: { retryable: boolean; status?: number; retryAfterMs?: number; reason: string }, cause?: unknown): TroupeError {
  const details: Record<string, unknown> = { provider, reason: facts.reason };
  if (facts.status !== undefined) details.status = facts.status;
  return new TroupeError(ErrorCode.MODEL_FAILED, `${provider}: ${message}`, {
    details,
    cause,
    retryable: facts.retryable,
    ...(facts.retryAfterMs !== undefined ? { retryAfterMs: facts.retryAfterMs } : {}),
  });
}

/**
 * What a failed `fetch` says, with the system error code (`ECONNREFUSED`, `ENOTFOUND`) that
 * undici hides in `cause`: "fetch failed" alone does not tell anyone what to fix.
 */
function networkText(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause as { message?: unknown; code?: unknown } | undefined;
  const inner = typeof cause?.message === 'string' ? cause.message : '';
  const code = typeof cause?.code === 'string' ? cause.code : '';
  // A dual-stack connect fails with an AggregateError whose message is empty; the code is not.
  const said = inner && code && !inner.includes(code) ? `${inner}, ${code}` : inner || code;
  return said ? `${error.message} (${said})` : error.message;
}

/** What {@link postJson} needs. */
export interface PostOptions {
  provider: string;
  fetch: FetchLike;
  url: string;
  headers: Record<string, string>;
  body: unknown;
  signal: AbortSignal;
  timeoutMs: number;
  /** The key in use, only so it can be scrubbed from echoed error text. */
  apiKey: string | undefined;
}

/**
 * POSTs JSON and returns the 2xx response with `guard`, which the caller wraps around reading
 * the body so the timeout and error mapping cover streaming too. Failures become
 * `MODEL_FAILED` with `retryable`, `status` and `retryAfterMs`; a caller abort is rethrown
 * as the signal's reason, because a stopping run is not a model failure.
 */
export async function postJson(options: PostOptions): Promise<{ response: Response; guard: <T>(work: () => Promise<T>) => Promise<T> }> {
  const timeout = AbortSignal.timeout(options.timeoutMs);
  const signal = AbortSignal.any([options.signal, timeout]);
  const guard = async <T>(work: () => Promise<T>): Promise<T> => {
    try {
      return await work();
    } catch (error) {
      if (options.signal.aborted) throw options.signal.reason;
      if (timeout.aborted) {
        throw modelError(options.provider, `no complete answer within ${options.timeoutMs} ms`, { retryable: true, reason: 'timeout' }, error);
      }
      if (error instanceof TroupeError) throw error;
      const text = redact(networkText(error), options.apiKey);
      throw modelError(options.provider, `network error: ${text}`, { retryable: true, reason: 'network' }, error);
    }
  };
  const response = await guard(() =>
    options.fetch(options.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...options.headers },
      body: JSON.stringify(options.body),
      signal,
    }),
  );
  if (!response.ok) {
    const body = await guard(() => response.text());
    const retryable = isRetryableStatus(response.status);
    const retryAfterMs = parseRetryAfter(response.headers);
    const text = redact(errorText(body), options.apiKey);
    throw modelError(options.provider, `HTTP ${response.status}: ${text}`, { retryable, status: response.status, retryAfterMs, reason: 'http' });
  }
  return { response, guard };
}

/** One Server-Sent Event. */
export interface SseEvent {
  event: string | undefined;
  data: string;
}

/**
 * Parses a Server-Sent Events body into events (`event:`/`data:` fields, blank-line
 * dispatch, `:` comments), however the bytes were split across network chunks.
 */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  let event: string | undefined;
  let data: string[] = [];
  const line = function* (text: string): Generator<SseEvent> {
    if (text === '') {
      if (data.length) yield { event, data: data.join('\n') };
      event = undefined;
      data = [];
      return;
    }
    if (text.startsWith(':')) return;
    const colon = text.indexOf(':');
    const field = colon === -1 ? text : text.slice(0, colon);
    const value = colon === -1 ? '' : text.slice(colon + 1).replace(/^ /, '');
    if (field === 'data') data.push(value);
    else if (field === 'event') event = value;
  };
  const reader = body.getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let cut: number;
      while ((cut = buffer.search(/\r\n|\r|\n/)) !== -1) {
        // A lone trailing \r may be the first half of \r\n: wait for the next chunk.
        if (buffer[cut] === '\r' && cut === buffer.length - 1 && !done) break;
        const text = buffer.slice(0, cut);
        buffer = buffer.slice(cut + (buffer.startsWith('\r\n', cut) ? 2 : 1));
        yield* line(text);
      }
      if (done) {
        if (buffer) yield* line(buffer);
        yield* line('');
        return;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/** Parses JSON from a provider, turning garbage into a non-retryable MODEL_FAILED. */
export function parseJson(provider: string, text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw modelError(provider, `${what} is not valid JSON: ${text.slice(0, 200)}`, { retryable: false, reason: 'protocol' }, error);
  }
}

/** Cost in US dollars from per-million-token prices. */
export interface ModelPrice {
  inputPerMTok: number;
  outputPerMTok: number;
}

/** Validates a price table once, at construction. */
export function checkPrices(provider: string, prices: Record<string, ModelPrice> | undefined): Record<string, ModelPrice> {
  for (const [model, price] of Object.entries(prices ?? {})) {
    const ok = (n: unknown) => typeof n === 'number' && Number.isFinite(n) && n >= 0;
    if (!price || !ok(price.inputPerMTok) || !ok(price.outputPerMTok)) {
      throw new TypeError(`${provider}: prices["${model}"] needs non-negative inputPerMTok and outputPerMTok`);
    }
  }
  return { ...prices };
}

/** The cost of a call, when the served (or else requested) model has a price. */
export function costOf(prices: Record<string, ModelPrice>, models: string[], usage: { inputTokens: number; outputTokens: number }): number | undefined {
  const price = models.map((m) => prices[m]).find((p) => p !== undefined);
  return price ? (usage.inputTokens * price.inputPerMTok + usage.outputTokens * price.outputPerMTok) / 1_000_000 : undefined;
}

/**
 * The `check` of an HTTP provider: which models exist is the server's business (and costs a
 * request), but a reference that names no model at all is known to fail: `openai:` or a bare
 * `openai` (its `default`) when no `defaultModel` says what that is.
 */
export function modelNameCheck(provider: string, defaultModel: string | undefined): (model: string) => string | undefined {
  return (model) => {
    if (model === '') return `provider "${provider}" needs a model name after the colon`;
    if (model === 'default' && !defaultModel) return `provider "${provider}" has no defaultModel, so "${provider}" alone names no model; write "${provider}:<model>" or pass defaultModel`;
    return undefined;
  };
}

/** Receives streamed text as it arrives; `request` says which agent and step it belongs to. */
export type TokenListener = (text: string, request: ModelRequest) => void;

/**
 * Picks the token listener of a call: the provider option, plus `onToken` on the call
 * context when the runtime supplies one (it is not part of `ModelCallContext` yet, so it is
 * read structurally). A throwing listener must not fail the model call.
 */
export function tokenSink(option: TokenListener | undefined, context: ModelCallContext, request: ModelRequest): (text: string) => void {
  const fromContext = (context as { onToken?: unknown }).onToken;
  const listeners = [option, typeof fromContext === 'function' ? (text: string) => (fromContext as (t: string) => void)(text) : undefined].filter(
    (l): l is TokenListener => l !== undefined,
  );
  return (text) => {
    if (!text) return;
    for (const listener of listeners) {
      try {
        listener(text, request);
      } catch {
        // observers are best-effort; the answer matters more than its live preview
      }
    }
  };
}
