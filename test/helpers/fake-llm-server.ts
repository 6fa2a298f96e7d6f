import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach } from 'vitest';

/**
 * A real HTTP server on 127.0.0.1 that answers with the real OpenAI Chat Completions and
 * Anthropic Messages wire formats, so providers are tested through `fetch`, headers, status
 * codes and SSE framing rather than against mocks. Replies are queued per path, in order.
 */

/** One canned reply. */
export type FakeReply =
  | { status?: number; headers?: Record<string, string>; json: unknown }
  /** Server-Sent Events; each string is written as its own network chunk. */
  | { status?: number; headers?: Record<string, string>; sse: string[] }
  /** Never answers (until the server closes): for timeouts and aborts. */
  | { hang: true }
  /** Drops the connection without a response: a network error. */
  | { destroy: true };

/** A request the server received. */
export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- test assertions read wire JSON freely
}

/** A running fake server. */
export interface FakeLLMServer {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly requests: RecordedRequest[];
  /** Queues replies for `path` (`/v1/chat/completions`), answered in order. */
  enqueue(path: string, ...replies: FakeReply[]): void;
  /** The reply for `path` once its queue is empty (a provider that is down, say). */
  fallback(path: string, reply: FakeReply): void;
  /** Requests seen on `path`. */
  on(path: string): RecordedRequest[];
  /** Drops the replies still queued for `path` (a call that never reached the server leaves its reply). */
  drain(path: string): void;
  close(): Promise<void>;
}

/** Starts a server on an ephemeral port of 127.0.0.1. */
export async function startFakeLLMServer(): Promise<FakeLLMServer> {
  const queues = new Map<string, FakeReply[]>();
  const fallbacks = new Map<string, FakeReply>();
  const requests: RecordedRequest[] = [];
  const hanging = new Set<ServerResponse>();

  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const path = (req.url ?? '/').split('?')[0]!;
    requests.push({ method: req.method ?? '', path, headers: req.headers, body: text ? JSON.parse(text) : undefined });
    const reply = queues.get(path)?.shift() ?? fallbacks.get(path);
    if (!reply) {
      // 418 is not retryable, so a missing reply fails a test loudly instead of falling back.
      res.writeHead(418, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: `fake server: no reply queued for ${req.method} ${path}` } }));
      return;
    }
    if ('hang' in reply) {
      hanging.add(res);
      res.on('close', () => hanging.delete(res));
      return;
    }
    if ('destroy' in reply) {
      req.socket.destroy();
      return;
    }
    if ('json' in reply) {
      res.writeHead(reply.status ?? 200, { 'content-type': 'application/json', ...reply.headers }).end(JSON.stringify(reply.json));
      return;
    }
    res.writeHead(reply.status ?? 200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', ...reply.headers });
    for (const piece of reply.sse) res.write(piece);
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    enqueue: (path, ...replies) => queues.set(path, [...(queues.get(path) ?? []), ...replies]),
    fallback: (path, reply) => void fallbacks.set(path, reply),
    on: (path) => requests.filter((r) => r.path === path),
    drain: (path) => void queues.delete(path),
    close: async () => {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => server.close((e) => (e ? reject(e) : resolve())));
    },
  };
}

/** Frames data as SSE: `data: <json>\n\n`, with an optional `event:` line. */
export const sseEvent = (data: unknown, event?: string) => `${event ? `event: ${event}\n` : ''}data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`;

/** Splits a string into pieces of `size` characters, so SSE lines straddle network chunks. */
export const shred = (text: string, size: number) => Array.from({ length: Math.ceil(text.length / size) }, (_, i) => text.slice(i * size, (i + 1) * size));

/** OpenAI Chat Completions replies. */
export const openai = {
  /** A complete (non-streamed) completion. */
  completion(options: { model?: string; content?: string | null; toolCalls?: Array<{ id: string; name: string; arguments: string }>; usage?: [number, number]; finish?: string }): FakeReply {
    const toolCalls = options.toolCalls?.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } }));
    return {
      json: {
        id: 'chatcmpl-1',
        object: 'chat.completion',
        created: 1_700_000_000,
        model: options.model ?? 'gpt-test-0001',
        choices: [{ index: 0, message: { role: 'assistant', content: options.content ?? null, ...(toolCalls ? { tool_calls: toolCalls } : {}) }, finish_reason: options.finish ?? (toolCalls ? 'tool_calls' : 'stop') }],
        usage: { prompt_tokens: options.usage?.[0] ?? 10, completion_tokens: options.usage?.[1] ?? 5, total_tokens: (options.usage?.[0] ?? 10) + (options.usage?.[1] ?? 5) },
      },
    };
  },
  /** A streamed completion: `deltas` are the `choices[0].delta` objects, in order. */
  stream(options: { model?: string; deltas: Array<Record<string, unknown>>; finish: string; usage?: [number, number]; done?: boolean; chunkSize?: number }): FakeReply {
    const model = options.model ?? 'gpt-test-0001';
    const base = { id: 'chatcmpl-2', object: 'chat.completion.chunk', created: 1_700_000_000, model };
    const events = [
      ...options.deltas.map((delta) => sseEvent({ ...base, choices: [{ index: 0, delta, finish_reason: null }] })),
      sseEvent({ ...base, choices: [{ index: 0, delta: {}, finish_reason: options.finish }] }),
      ...(options.usage ? [sseEvent({ ...base, choices: [], usage: { prompt_tokens: options.usage[0], completion_tokens: options.usage[1], total_tokens: options.usage[0] + options.usage[1] } })] : []),
      ...(options.done === false ? [] : [sseEvent('[DONE]')]),
    ];
    return { sse: options.chunkSize ? shred(events.join(''), options.chunkSize) : events };
  },
  /** An error reply in OpenAI's shape. */
  error(status: number, message: string, headers?: Record<string, string>): FakeReply {
    return { status, headers, json: { error: { message, type: 'invalid_request_error', param: null, code: null } } };
  },
};

/** Anthropic Messages replies. */
export const anthropicReply = {
  /** A complete (non-streamed) message. */
  message(options: { model?: string; content: Array<Record<string, unknown>>; stop?: string; usage?: [number, number] }): FakeReply {
    return {
      json: {
        id: 'msg_1',
        type: 'message',
        role: 'assistant',
        model: options.model ?? 'claude-test-1',
        content: options.content,
        stop_reason: options.stop ?? 'end_turn',
        stop_sequence: null,
        usage: { input_tokens: options.usage?.[0] ?? 12, output_tokens: options.usage?.[1] ?? 6 },
      },
    };
  },
  /** A streamed message: `events` sit between `message_start` and `message_delta`/`message_stop`. */
  stream(options: { model?: string; events: Array<Record<string, unknown>>; stop: string; usage?: [number, number]; stopEvent?: boolean; chunkSize?: number }): FakeReply {
    const frames = [
      sseEvent({ type: 'message_start', message: { id: 'msg_2', type: 'message', role: 'assistant', model: options.model ?? 'claude-test-1', content: [], stop_reason: null, usage: { input_tokens: options.usage?.[0] ?? 12, output_tokens: 1 } } }, 'message_start'),
      sseEvent({ type: 'ping' }, 'ping'),
      ...options.events.map((e) => sseEvent(e, String(e.type))),
      sseEvent({ type: 'message_delta', delta: { stop_reason: options.stop, stop_sequence: null }, usage: { output_tokens: options.usage?.[1] ?? 6 } }, 'message_delta'),
      ...(options.stopEvent === false ? [] : [sseEvent({ type: 'message_stop' }, 'message_stop')]),
    ];
    return { sse: options.chunkSize ? shred(frames.join(''), options.chunkSize) : frames };
  },
  /** An error reply in Anthropic's shape. */
  error(status: number, type: string, message: string, headers?: Record<string, string>): FakeReply {
    return { status, headers, json: { type: 'error', error: { type, message } } };
  },
};

/**
 * One fake server for the tests of a file: started before them, its recorded requests
 * cleared before each, closed after them. The returned object stands for the server.
 */
export function useFakeLLMServer(): FakeLLMServer {
  let server: FakeLLMServer | undefined;
  beforeAll(async () => {
    server = await startFakeLLMServer();
  });
  afterAll(() => server?.close());
  beforeEach(() => {
    if (server) server.requests.length = 0;
  });
  return new Proxy({} as FakeLLMServer, {
    get(_target, property) {
      if (!server) throw new Error('the fake LLM server is used before its beforeAll started it');
      const value = Reflect.get(server, property, server) as unknown;
      return typeof value === 'function' ? value.bind(server) : value;
    },
  });
}
