import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, memoryStorage, msg, serializeError, tool, type Message, type ModelRequest, type Storage } from '../index.js';
import { manualClock } from '../core/clock.js';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRunStore } from '../core/run-store.js';
import { openAICompatible, parseRetryAfter, readSse, toOpenAIMessages } from '../models/index.js';
import { modelProviderConformance } from '../testing/model-conformance.js';
import { openai, shred, sseEvent, useFakeLLMServer } from './helpers/fake-llm-server.js';
import { failure } from './helpers/failure.js';
import { steppingClock } from './helpers/stepping-clock.js';

const PATH = '/v1/chat/completions';
const KEY = 'sk-test-SECRET-4242';

const server = useFakeLLMServer();

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

  it('keeps tool arguments it cannot read as the raw text, saying why, instead of failing the call', async () => {
    server.enqueue(PATH, openai.completion({ toolCalls: [{ id: 'call_x', name: 'lookup', arguments: '{"word": "act' }, { id: 'call_y', name: 'lookup', arguments: '["actor"]' }] }));
    const response = await provider().generate(request([msg.user('go')]), signal());
    expect(response.message.toolCalls).toEqual([
      { id: 'call_x', name: 'lookup', args: '{"word": "act', argsError: expect.stringMatching(/^not valid JSON \(.+\)$/) },
      { id: 'call_y', name: 'lookup', args: '["actor"]', argsError: 'must be a JSON object, got an array' },
    ]);
    // Sent back as the model wrote them.
    expect(toOpenAIMessages([response.message])).toEqual([
      {
        role: 'assistant',
        content: null,
        tool_calls: [
          { id: 'call_x', type: 'function', function: { name: 'lookup', arguments: '{"word": "act' } },
          { id: 'call_y', type: 'function', function: { name: 'lookup', arguments: '["actor"]' } },
        ],
      },
    ]);
  });

  it('returns unreadable tool arguments to the model as a tool error, and the run goes on (plain and streamed)', async () => {
    const calls: string[] = [];
    const lookup = tool({ name: 'lookup', description: 'Looks a word up.', input: z.object({ word: z.string() }), effect: 'read', run: ({ word }) => (calls.push(word), `${word}: a definition`) });
    const solo = crew({ id: 'solo', agents: [agent({ id: 'speaker', role: 'speaks', instructions: 'Speak.', model: 'openai:gpt-test', tools: [lookup] })] });
    const cases = [
      { stream: false, broken: openai.completion({ toolCalls: [{ id: 'call_1', name: 'lookup', arguments: '{"word": "act' }] }), why: /not valid JSON \(.+\); received "\{\\"word\\": \\"act"$/ },
      {
        stream: true,
        broken: openai.stream({ deltas: [{ tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'lookup', arguments: '["ac' } }] }, { tool_calls: [{ index: 0, function: { arguments: 'tor"]' } }] }], finish: 'tool_calls' }),
        why: /must be a JSON object, got an array; received "\[\\"actor\\"\]"$/,
      },
    ];
    for (const [i, c] of cases.entries()) {
      server.requests.length = 0;
      const answer = c.stream ? openai.stream({ deltas: [{ content: 'Sorry, fixed.' }], finish: 'stop' }) : openai.completion({ content: 'Sorry, fixed.' });
      server.enqueue(PATH, c.broken, answer);
      await using storage = memoryStorage();
      await using node = await createNode({ storage, models: { openai: provider({ stream: c.stream }) } });
      const result = await (await node.run(solo, { input: 'look up actor', runId: `args-${i}` })).result();
      expect(result.output).toBe('Sorry, fixed.');
      expect(server.on(PATH)).toHaveLength(2);
      const [toolMessage] = server.on(PATH)[1]!.body.messages.slice(-1);
      expect(toolMessage).toMatchObject({ role: 'tool', tool_call_id: 'call_1' });
      expect(toolMessage.content).toMatch(/^error: invalid arguments for lookup: /);
      expect(toolMessage.content).toMatch(c.why);
    }
    expect(calls).toEqual([]); // the tool never ran on arguments it could not have meant
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
    expect(error).toMatchObject({ retryable: true, details: { reason: 'network' } });
    expect(error.message).toMatch(/stream ended before the answer was complete/);
  });

  it('maps 429 (Retry-After seconds and retry-after-ms) and 500 to retryable failures', async () => {
    server.enqueue(PATH, openai.error(429, 'Rate limit reached', { 'retry-after': '2' }), openai.error(429, 'Slow down', { 'retry-after-ms': '350', 'retry-after': '9' }), openai.error(500, 'The server had an error'));
    const model = provider();
    const limited = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(limited).toMatchObject({ retryable: true, retryAfterMs: 2000, details: { status: 429, provider: 'openai' } });
    expect(limited.message).toBe('openai: HTTP 429: Rate limit reached');
    const precise = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(precise).toMatchObject({ retryable: true, retryAfterMs: 350, details: { status: 429 } });
    const broken = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(broken).toMatchObject({ retryable: true, details: { status: 500 } });
    expect(broken.retryAfterMs).toBeUndefined();
    // Typed fields, not details, and kept as top-level fields when serialised.
    expect(limited.details).not.toHaveProperty('retryable');
    expect(limited.details).not.toHaveProperty('retryAfterMs');
    expect(serializeError(limited)).toMatchObject({ code: 'MODEL_FAILED', retryable: true, retryAfterMs: 2000, details: { status: 429 } });
  });

  it('marks 400/401/403/404/422 final and 408/409/429/5xx retryable', async () => {
    const statuses = [400, 401, 403, 404, 422, 408, 409, 429, 500, 502, 503];
    server.enqueue(PATH, ...statuses.map((status) => openai.error(status, `status ${status}`)));
    const model = provider();
    const seen: Record<number, boolean | undefined> = {};
    for (const status of statuses) seen[status] = (await failure(model.generate(request([msg.user('a')]), signal()))).retryable;
    expect(seen).toEqual({ 400: false, 401: false, 403: false, 404: false, 422: false, 408: true, 409: true, 429: true, 500: true, 502: true, 503: true });
  });

  it('fails an agent on HTTP 404 with one request: no retry, no supervision restart', async () => {
    server.enqueue(PATH, openai.error(404, "The model `gpt-missing` does not exist or you do not have access to it."));
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { openai: provider() } });
    // The crew's default supervision would restart a failed agent three times.
    const solo = crew({ id: 'solo', agents: [agent({ id: 'speaker', role: 'speaks', instructions: 'Speak.', model: 'openai:gpt-missing' })] });
    const result = await (await node.run(solo, { input: 'hi', runId: 'nf-1' })).settled();
    expect(server.on(PATH)).toHaveLength(1);
    expect(result.status).toBe('failed');
    expect(result.error).toMatchObject({ code: 'SUPERVISION_ESCALATED', details: { agent: 'speaker', cause: { code: 'MODEL_FAILED', retryable: false, details: { status: 404 } } } });
    expect(result.error?.message).toBe(
      'speaker failed and was not restarted (MODEL_FAILED is not retryable, so a restart cannot fix it): openai: HTTP 404: The model `gpt-missing` does not exist or you do not have access to it.',
    );
  });

  it('maps 401 to a non-retryable failure with the provider message and never leaks the key', async () => {
    server.enqueue(PATH, openai.error(401, `Incorrect API key provided: ${KEY}. You can find your API key at https://platform.openai.com.`));
    const error = await failure(provider().generate(request([msg.user('a')]), signal()));
    expect(error.code).toBe('MODEL_FAILED');
    expect(error).toMatchObject({ retryable: false, details: { status: 401 } });
    expect(error.message).toMatch(/HTTP 401: Incorrect API key provided: \[redacted\]/);
    expect(JSON.stringify(serializeError(error))).not.toContain(KEY);
    expect(String(error.stack)).not.toContain(KEY);
  });

  it('maps a dropped connection and a timeout to retryable failures, but rethrows a caller abort', async () => {
    server.enqueue(PATH, { destroy: true }, { hang: true }, { hang: true });
    const model = provider({ timeoutMs: 150 });
    const dropped = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(dropped).toMatchObject({ retryable: true, details: { reason: 'network' } });
    expect(dropped.message).not.toContain(KEY);

    const slow = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(slow).toMatchObject({ retryable: true, details: { reason: 'timeout' } });

    const controller = new AbortController();
    const reason = new Error('run stopping');
    const pending = model.generate(request([msg.user('a')]), { signal: controller.signal });
    await expect.poll(() => server.on(PATH).length).toBe(3); // the request is in flight
    controller.abort(reason);
    await expect(pending).rejects.toBe(reason);
  });

  it('names the system error of a refused connection and keeps the fetch error as the cause', async () => {
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const error = await failure(openAICompatible({ baseURL: `http://127.0.0.1:${port}/v1` }).generate(request([msg.user('a')]), signal()));
    expect(error).toMatchObject({ code: 'MODEL_FAILED', retryable: true, details: { reason: 'network' } });
    expect(error.message).toBe(`openai: network error: fetch failed (connect ECONNREFUSED 127.0.0.1:${port})`);
    expect(error.cause).toBeInstanceOf(TypeError);
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

describe('Retry-After in a run', () => {
  const solo = (retry: Parameters<typeof agent>[0]['retry'] = {}) =>
    crew({ id: 'solo', agents: [agent({ id: 'speaker', role: 'speaks', instructions: 'Speak.', model: 'openai:gpt-test', retry })] });
  /** The speaker's stored retry deadline, once a checkpoint shows it in `recovering`. */
  const storedRetryAt = async (storage: Storage, runId: string) => {
    const checkpoint = await createRunStore(storage).latestCheckpoint(runId);
    const speaker = (checkpoint?.snapshot as { children?: Record<string, { snapshot?: { value?: unknown; context?: { retryAt?: number } } }> })?.children?.speaker?.snapshot;
    return speaker?.value === 'recovering' ? speaker.context?.retryAt : undefined;
  };

  it('waits as long as a 429 asks: the next attempt\'s stored deadline is 5 s later on the injected clock', async () => {
    const clock = manualClock(1_000_000);
    server.enqueue(PATH, openai.error(429, 'Rate limit reached for gpt-test', { 'retry-after': '5' }), openai.completion({ content: 'at last' }));
    await using storage = memoryStorage();
    await using node = await createNode({ storage, clock, models: { openai: provider() } });
    const run = await node.run(solo(), { input: 'hi', runId: 'ra-1' });
    await expect.poll(() => storedRetryAt(storage, 'ra-1')).toBeDefined();
    // Not the 200 ms backoff of a first retry: the 5 s the server asked for.
    expect(await storedRetryAt(storage, 'ra-1')).toBe(1_000_000 + 5_000);
    clock.advance(4_999);
    expect(clock.pending).toBe(1); // the backoff timer has not fired
    expect(server.on(PATH)).toHaveLength(1);
    clock.advance(1);
    expect((await run.result()).output).toBe('at last');
    expect(server.on(PATH)).toHaveLength(2);
  });

  it('fails at once, saying why, when the wait asked for exceeds retry.maxRetryAfterMs', async () => {
    server.enqueue(PATH, openai.error(429, 'You exceeded your current quota', { 'retry-after': '120' }), openai.error(503, 'Busy', { 'retry-after-ms': '30000' }));
    const clock = steppingClock(0);
    await using storage = memoryStorage();
    await using node = await createNode({ storage, clock, models: { openai: provider() } });

    const quota = await (await node.run(solo(), { input: 'hi', runId: 'ra-2' })).settled();
    expect(server.on(PATH)).toHaveLength(1);
    expect(quota.error).toMatchObject({ code: 'SUPERVISION_ESCALATED', details: { cause: { code: 'RETRIES_EXHAUSTED', retryable: false, retryAfterMs: 120_000 } } });
    expect(quota.error?.message).toBe(
      'speaker failed and was not restarted (RETRIES_EXHAUSTED is not retryable, so a restart cannot fix it): ' +
        'agent "speaker" will not wait 120000 ms as asked, more than retry.maxRetryAfterMs (60000 ms): openai: HTTP 429: You exceeded your current quota',
    );

    const busy = await (await node.run(solo({ maxRetryAfterMs: 10_000 }), { input: 'hi', runId: 'ra-3' })).settled();
    expect(server.on(PATH)).toHaveLength(2);
    expect(busy.error?.message).toContain('agent "speaker" will not wait 30000 ms as asked, more than retry.maxRetryAfterMs (10000 ms): openai: HTTP 503: Busy');
    // Nothing waited, nothing hammered.
    expect(clock.armed).toEqual([]);
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
