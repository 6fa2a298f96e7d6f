import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { agent, createNode, crew, memoryStorage, msg, serializeError, type Message, type ModelRequest } from '../index.js';
import { createRunStore } from '../core/run-store.js';
import { openAICompatible, parseRetryAfter, readSse } from '../models/index.js';
import { modelProviderConformance } from '../testing/model-conformance.js';
import { openai, shred, sseEvent, startFakeLLMServer, type FakeLLMServer } from './helpers/fake-llm-server.js';
import { failure } from './helpers/failure.js';

const PATH = '/v1/chat/completions';
const KEY = 'sk-test-SECRET-4242';

let server: FakeLLMServer;
beforeAll(async () => {
  server = await startFakeLLMServer();
});
afterAll(() => server.close());
beforeEach(() => {
  server.requests.length = 0;
});

const lookupSpec = { name: 'lookup', description: 'Looks a word up.', inputSchema: { type: 'object', properties: { word: { type: 'string' } }, required: ['word'] } };

const request = (messages: Message[], extra: Partial<ModelRequest> = {}): ModelRequest => ({
  model: 'gpt-test',
  messages,
  tools: [lookupSpec],
  agent: 'researcher',
  runId: 'r1',
  step: 1,
  phase: 'plan',
  attempt: 0,
  ...extra,
});
const signal = () => ({ signal: new AbortController().signal });
const provider = (extra: Partial<Parameters<typeof openAICompatible>[0]> = {}) => openAICompatible({ baseURL: `${server.url}/v1/`, apiKey: KEY, ...extra });

/** Runs a call expected to fail and returns its error. */

describe('openAICompatible', () => {
  it('round-trips a tool-calling conversation through the Chat Completions wire format', async () => {
    server.enqueue(PATH, openai.completion({ content: 'Checking two words.', toolCalls: [{ id: 'call_a', name: 'lookup', arguments: '{"word":"state"}' }, { id: 'call_b', name: 'lookup', arguments: '' }], usage: [1000, 500] }));
    const conversation: Message[] = [
      msg.system('Research.'),
      msg.user('task', 'crew'),
      msg.user('from someone odd', 'not a valid name!'),
      msg.assistant('', [{ id: 'call_1', name: 'lookup', args: { word: 'actor' } }]),
      msg.tool('call_1', 'lookup', 'actor: a definition'),
      msg.tool('call_2', 'lookup', 'error: boom', true),
      msg.assistant('noted'),
    ];
    const model = provider({ headers: { 'openai-project': 'proj_1' }, prices: { 'gpt-test-0001': { inputPerMTok: 2, outputPerMTok: 8 } } });
    const response = await model.generate(request(conversation), signal());

    const [sent] = server.on(PATH);
    expect(sent!.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(sent!.headers['openai-project']).toBe('proj_1');
    expect(sent!.body).toEqual({
      model: 'gpt-test',
      messages: [
        { role: 'system', content: 'Research.' },
        { role: 'user', content: 'task', name: 'crew' },
        { role: 'user', content: 'from someone odd' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'lookup', arguments: '{"word":"actor"}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: 'actor: a definition' },
        { role: 'tool', tool_call_id: 'call_2', content: 'error: boom' },
        { role: 'assistant', content: 'noted' },
      ],
      tools: [{ type: 'function', function: { name: 'lookup', description: 'Looks a word up.', parameters: lookupSpec.inputSchema } }],
    });
    expect(response).toEqual({
      message: { role: 'assistant', content: 'Checking two words.', toolCalls: [{ id: 'call_a', name: 'lookup', args: { word: 'state' } }, { id: 'call_b', name: 'lookup', args: {} }] },
      usage: { inputTokens: 1000, outputTokens: 500 },
      model: 'openai:gpt-test-0001',
      finishReason: 'tool_calls',
      cost: (1000 * 2 + 500 * 8) / 1e6,
    });
  });

  it('omits tools and the Authorization header when there are none (local servers)', async () => {
    server.enqueue(PATH, openai.completion({ content: 'hi', model: 'llama3' }));
    const local = openAICompatible({ id: 'ollama', baseURL: `${server.url}/v1`, apiKeyEnv: 'TROUPE_TEST_UNSET_KEY', defaultModel: 'llama3' });
    const response = await local.generate(request([msg.user('hi')], { tools: [], model: 'default' }), signal());
    const [sent] = server.on(PATH);
    expect(sent!.headers.authorization).toBeUndefined();
    expect(sent!.body).toEqual({ model: 'llama3', messages: [{ role: 'user', content: 'hi' }] });
    expect(response).toMatchObject({ model: 'ollama:llama3', message: { role: 'assistant', content: 'hi' }, finishReason: 'stop' });
    expect(response.cost).toBeUndefined();
  });

  it('refuses tool arguments that are not JSON instead of passing the raw string on', async () => {
    server.enqueue(PATH, openai.completion({ toolCalls: [{ id: 'call_x', name: 'lookup', arguments: '{"word": "act' }] }));
    const error = await failure(provider().generate(request([msg.user('go')]), signal()));
    expect(error.code).toBe('MODEL_FAILED');
    expect(error.details).toMatchObject({ retryable: false, reason: 'protocol' });
    expect(error.message).toMatch(/arguments of tool call "lookup" is not valid JSON/);
  });

  it('assembles a streamed answer, tool-call argument deltas included, and reports tokens', async () => {
    server.enqueue(
      PATH,
      openai.stream({
        deltas: [
          { role: 'assistant', content: '' },
          { content: 'Let me ' },
          { content: 'check.' },
          { tool_calls: [{ index: 0, id: 'call_s1', type: 'function', function: { name: 'lookup', arguments: '' } }] },
          { tool_calls: [{ index: 0, function: { arguments: '{"wo' } }] },
          { tool_calls: [{ index: 1, id: 'call_s2', type: 'function', function: { name: 'lookup', arguments: '{"word":' } }] },
          { tool_calls: [{ index: 0, function: { arguments: 'rd":"actor"}' } }] },
          { tool_calls: [{ index: 1, function: { arguments: '"state"}' } }] },
        ],
        finish: 'tool_calls',
        usage: [42, 17],
        chunkSize: 7, // lines straddle network writes
      }),
    );
    const tokens: Array<[string, string]> = [];
    const model = provider({ stream: true, onToken: (text, req) => tokens.push([text, req.agent]) });
    const response = await model.generate(request([msg.user('go')]), signal());

    expect(server.on(PATH)[0]!.body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
    expect(tokens).toEqual([['Let me ', 'researcher'], ['check.', 'researcher']]);
    expect(response).toEqual({
      message: { role: 'assistant', content: 'Let me check.', toolCalls: [{ id: 'call_s1', name: 'lookup', args: { word: 'actor' } }, { id: 'call_s2', name: 'lookup', args: { word: 'state' } }] },
      usage: { inputTokens: 42, outputTokens: 17 },
      model: 'openai:gpt-test-0001',
      finishReason: 'tool_calls',
    });
  });

  it('streams tokens of a run into its live events without persisting them', async () => {
    server.enqueue(PATH, openai.stream({ deltas: [{ role: 'assistant', content: '' }, { content: 'Hello ' }, { content: 'crew.' }], finish: 'stop', usage: [5, 2] }));
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { openai: provider({ stream: true }) } });
    const solo = crew({ id: 'solo', agents: [agent({ id: 'speaker', role: 'speaks', instructions: 'Speak.', model: 'openai:gpt-test' })] });
    const run = await node.run(solo, { input: 'hi', runId: 'tok-1' });
    const tokens: string[] = [];
    run.subscribe((e) => e.type === 'model.token' && tokens.push(`${e.actor}:${e.text}`));
    expect((await run.result()).output).toBe('Hello crew.');
    expect(tokens).toEqual(['speaker:Hello ', 'speaker:crew.']);
    const journal = await createRunStore(storage).journal('tok-1');
    expect(journal.some((e) => JSON.stringify(e).includes('model.token'))).toBe(false);
  });

  it('treats a stream cut off before its end as a retryable failure', async () => {
    server.enqueue(PATH, { sse: [sseEvent({ model: 'gpt-test-0001', choices: [{ index: 0, delta: { content: 'half an ans' }, finish_reason: null }] })] });
    const error = await failure(provider({ stream: true }).generate(request([msg.user('go')]), signal()));
    expect(error.details).toMatchObject({ retryable: true, reason: 'network' });
    expect(error.message).toMatch(/stream ended before the answer was complete/);
  });

  it('maps 429 (Retry-After seconds and retry-after-ms) and 500 to retryable failures', async () => {
    server.enqueue(PATH, openai.error(429, 'Rate limit reached', { 'retry-after': '2' }), openai.error(429, 'Slow down', { 'retry-after-ms': '350', 'retry-after': '9' }), openai.error(500, 'The server had an error'));
    const model = provider();
    const limited = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(limited.details).toMatchObject({ retryable: true, status: 429, retryAfterMs: 2000, provider: 'openai' });
    expect(limited.message).toBe('openai: HTTP 429: Rate limit reached');
    const precise = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(precise.details).toMatchObject({ retryable: true, status: 429, retryAfterMs: 350 });
    const broken = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(broken.details).toMatchObject({ retryable: true, status: 500 });
    expect(broken.details.retryAfterMs).toBeUndefined();
  });

  it('maps 401 to a non-retryable failure with the provider message and never leaks the key', async () => {
    server.enqueue(PATH, openai.error(401, `Incorrect API key provided: ${KEY}. You can find your API key at https://platform.openai.com.`));
    const error = await failure(provider().generate(request([msg.user('a')]), signal()));
    expect(error.code).toBe('MODEL_FAILED');
    expect(error.details).toMatchObject({ retryable: false, status: 401 });
    expect(error.message).toMatch(/HTTP 401: Incorrect API key provided: \[redacted\]/);
    expect(JSON.stringify(serializeError(error))).not.toContain(KEY);
    expect(String(error.stack)).not.toContain(KEY);
  });

  it('maps a dropped connection and a timeout to retryable failures, but rethrows a caller abort', async () => {
    server.enqueue(PATH, { destroy: true }, { hang: true }, { hang: true });
    const model = provider({ timeoutMs: 150 });
    const dropped = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(dropped.details).toMatchObject({ retryable: true, reason: 'network' });
    expect(dropped.message).not.toContain(KEY);

    const slow = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(slow.details).toMatchObject({ retryable: true, reason: 'timeout' });

    const controller = new AbortController();
    const reason = new Error('run stopping');
    const pending = model.generate(request([msg.user('a')]), { signal: controller.signal });
    await expect.poll(() => server.on(PATH).length).toBe(3); // the request is in flight
    controller.abort(reason);
    await expect(pending).rejects.toBe(reason);
  });

  it('reads the key per call from a function', async () => {
    let key = 'sk-first';
    server.enqueue(PATH, openai.completion({ content: 'a' }), openai.completion({ content: 'b' }));
    const model = provider({ apiKey: () => key });
    await model.generate(request([msg.user('a')]), signal());
    key = 'sk-second';
    await model.generate(request([msg.user('a')]), signal());
    expect(server.on(PATH).map((r) => r.headers.authorization)).toEqual(['Bearer sk-first', 'Bearer sk-second']);
  });

  it('refuses misconfiguration with a TypeError stating the rule', () => {
    expect(() => openAICompatible({ baseURL: 'api.openai.com' })).toThrow(/baseURL must be an http\(s\) URL/);
    expect(() => openAICompatible({ baseURL: 'http://x', prices: { m: { inputPerMTok: -1, outputPerMTok: 1 } } })).toThrow(TypeError);
    expect(() => openAICompatible({ baseURL: 'http://x', timeoutMs: 0 })).toThrow(/timeoutMs must be a positive/);
  });
});

describe('http helpers', () => {
  it('parses Retry-After as seconds, HTTP date or retry-after-ms, and ignores garbage', () => {
    const now = Date.parse('2025-01-01T00:00:00Z');
    expect(parseRetryAfter(new Headers({ 'retry-after': '3' }), now)).toBe(3000);
    expect(parseRetryAfter(new Headers({ 'retry-after': 'Wed, 01 Jan 2025 00:00:05 GMT' }), now)).toBe(5000);
    expect(parseRetryAfter(new Headers({ 'retry-after': 'Tue, 31 Dec 2024 23:00:00 GMT' }), now)).toBe(0);
    expect(parseRetryAfter(new Headers({ 'retry-after-ms': '12.6', 'retry-after': '3' }), now)).toBe(13);
    expect(parseRetryAfter(new Headers({ 'retry-after': 'soon' }), now)).toBeUndefined();
    expect(parseRetryAfter(new Headers(), now)).toBeUndefined();
  });

  it('parses SSE framing however the bytes are split', async () => {
    const text = ': comment\r\nevent: delta\r\ndata: {"a":1}\r\n\r\ndata: line one\ndata: line two\n\ndata:no-space\n\nevent: lonely\n\ndata: tail';
    const expected = [
      { event: 'delta', data: '{"a":1}' },
      { event: undefined, data: 'line one\nline two' },
      { event: undefined, data: 'no-space' },
      { event: undefined, data: 'tail' },
    ];
    for (const size of [1, 2, 5, text.length]) {
      const bytes = shred(text, size).map((piece) => new TextEncoder().encode(piece));
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          for (const b of bytes) controller.enqueue(b);
          controller.close();
        },
      });
      const events = [];
      for await (const event of readSse(body)) events.push(event);
      expect(events, `chunk size ${size}`).toEqual(expected);
    }
  });
});

for (const stream of [false, true]) {
  modelProviderConformance(`openAICompatible (${stream ? 'streaming' : 'whole answers'})`, async () => {
    server.enqueue(
      PATH,
      stream
        ? openai.stream({ deltas: [{ role: 'assistant', content: '' }, { content: 'Actors ' }, { content: 'keep state.' }], finish: 'stop', usage: [9, 3] })
        : openai.completion({ content: 'Actors keep state.', usage: [9, 3] }),
    );
    return { provider: provider({ stream }), request: request([msg.user('What do actors keep?')]), streams: stream, close: async () => server.drain(PATH) };
  }, { describe, it, afterEach });
}
