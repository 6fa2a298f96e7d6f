import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { msg, serializeError, type Message, type ModelRequest } from '../index.js';
import { anthropic, toAnthropicMessages } from '../models/index.js';
import { modelProviderConformance } from '../testing/model-conformance.js';
import { anthropicReply, sseEvent, useFakeLLMServer } from './helpers/fake-llm-server.js';
import { failure } from './helpers/failure.js';

const PATH = '/v1/messages';
const KEY = 'sk-ant-test-SECRET-77';

const server = useFakeLLMServer();

const lookupSpec = { name: 'lookup', description: 'Looks a word up.', inputSchema: { type: 'object', properties: { word: { type: 'string' } } } };
const request = (messages: Message[], extra: Partial<ModelRequest> = {}): ModelRequest => ({
  model: 'claude-test',
  messages,
  tools: [lookupSpec],
  agent: 'writer',
  runId: 'r1',
  step: 1,
  phase: 'plan',
  attempt: 0,
  ...extra,
});
const signal = () => ({ signal: new AbortController().signal });
const provider = (extra: Parameters<typeof anthropic>[0] = {}) => anthropic({ baseURL: server.url, apiKey: KEY, ...extra });


describe('anthropic', () => {
  it('round-trips a tool-calling conversation through the Messages wire format', async () => {
    server.enqueue(
      PATH,
      anthropicReply.message({
        content: [
          { type: 'text', text: 'One more lookup.' },
          { type: 'tool_use', id: 'toolu_9', name: 'lookup', input: { word: 'state' } },
        ],
        stop: 'tool_use',
        usage: [2000, 100],
      }),
    );
    const conversation: Message[] = [
      msg.system('Write.'),
      msg.user('task', 'crew'),
      msg.assistant('Looking up two words.', [
        { id: 'toolu_1', name: 'lookup', args: { word: 'actor' } },
        { id: 'toolu_2', name: 'lookup', args: { word: 'x' } },
      ]),
      msg.tool('toolu_1', 'lookup', 'actor: a definition'),
      msg.tool('toolu_2', 'lookup', 'error: no entry', true),
      msg.user('hurry up'),
      msg.assistant('', [{ id: 'toolu_3', name: 'lookup', args: { word: 'y' } }]),
      msg.tool('toolu_3', 'lookup', 'y: a letter'),
    ];
    const model = provider({ prices: { 'claude-test-1': { inputPerMTok: 3, outputPerMTok: 15 } } });
    const response = await model.generate(request(conversation), signal());

    const [sent] = server.on(PATH);
    expect(sent!.headers['x-api-key']).toBe(KEY);
    expect(sent!.headers['anthropic-version']).toBe('2023-06-01');
    expect(sent!.headers.authorization).toBeUndefined();
    expect(sent!.body).toEqual({
      model: 'claude-test',
      max_tokens: 1024,
      system: 'Write.',
      messages: [
        { role: 'user', content: [{ type: 'text', text: 'task' }] },
        {
          role: 'assistant',
          content: [
            { type: 'text', text: 'Looking up two words.' },
            { type: 'tool_use', id: 'toolu_1', name: 'lookup', input: { word: 'actor' } },
            { type: 'tool_use', id: 'toolu_2', name: 'lookup', input: { word: 'x' } },
          ],
        },
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: 'toolu_1', content: 'actor: a definition' },
            { type: 'tool_result', tool_use_id: 'toolu_2', content: 'error: no entry', is_error: true },
            { type: 'text', text: 'hurry up' },
          ],
        },
        { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_3', name: 'lookup', input: { word: 'y' } }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_3', content: 'y: a letter' }] },
      ],
      tools: [{ name: 'lookup', description: 'Looks a word up.', input_schema: lookupSpec.inputSchema }],
    });
    expect(response).toEqual({
      message: { role: 'assistant', content: 'One more lookup.', toolCalls: [{ id: 'toolu_9', name: 'lookup', args: { word: 'state' } }] },
      usage: { inputTokens: 2000, outputTokens: 100 },
      model: 'anthropic:claude-test-1',
      finishReason: 'tool_calls',
      cost: (2000 * 3 + 100 * 15) / 1e6,
    });
  });

  it('assembles a streamed answer from text and input_json deltas, with usage from start and delta', async () => {
    server.enqueue(
      PATH,
      anthropicReply.stream({
        events: [
          { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
          { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Checking ' } },
          { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'that.' } },
          { type: 'content_block_stop', index: 0 },
          { type: 'content_block_start', index: 1, content_block: { type: 'tool_use', id: 'toolu_s', name: 'lookup', input: {} } },
          { type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: '' } },
          { type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: '{"word": "ac' } },
          { type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: 'tor"}' } },
          { type: 'content_block_stop', index: 1 },
          { type: 'content_block_start', index: 2, content_block: { type: 'tool_use', id: 'toolu_t', name: 'lookup', input: {} } },
          { type: 'content_block_stop', index: 2 },
        ],
        stop: 'tool_use',
        usage: [30, 22],
        chunkSize: 11,
      }),
    );
    const tokens: string[] = [];
    const response = await provider({ stream: true, onToken: (text) => tokens.push(text) }).generate(request([msg.system('s'), msg.user('go')]), signal());
    expect(server.on(PATH)[0]!.body).toMatchObject({ stream: true, system: 's' });
    expect(tokens).toEqual(['Checking ', 'that.']);
    expect(response).toEqual({
      message: {
        role: 'assistant',
        content: 'Checking that.',
        toolCalls: [
          { id: 'toolu_s', name: 'lookup', args: { word: 'actor' } },
          { id: 'toolu_t', name: 'lookup', args: {} },
        ],
      },
      usage: { inputTokens: 30, outputTokens: 22 },
      model: 'anthropic:claude-test-1',
      finishReason: 'tool_calls',
    });
  });

  it('fails streams that report overloaded or end early, and keeps broken tool input for the model to correct', async () => {
    server.enqueue(
      PATH,
      { sse: [sseEvent({ type: 'message_start', message: { model: 'claude-test-1', usage: { input_tokens: 1 } } }, 'message_start'), sseEvent({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }, 'error')] },
      anthropicReply.stream({ events: [{ type: 'content_block_start', index: 0, content_block: { type: 'text', text: 'par' } }], stop: 'end_turn', stopEvent: false }),
      anthropicReply.stream({
        events: [
          { type: 'content_block_start', index: 0, content_block: { type: 'tool_use', id: 'toolu_b', name: 'lookup', input: {} } },
          { type: 'content_block_delta', index: 0, delta: { type: 'input_json_delta', partial_json: '{"word": ' } },
        ],
        stop: 'tool_use',
      }),
    );
    const model = provider({ stream: true });
    const overloaded = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(overloaded.message).toBe('anthropic: overloaded_error: Overloaded');
    expect(overloaded).toMatchObject({ retryable: true });
    const cut = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(cut).toMatchObject({ retryable: true, details: { reason: 'network' } });
    const broken = await model.generate(request([msg.user('a')]), signal());
    expect(broken.message.toolCalls).toEqual([{ id: 'toolu_b', name: 'lookup', args: '{"word": ', argsError: expect.stringMatching(/^not valid JSON \(.+\)$/) }]);
    // Sent back with an empty input (the API requires an object); the text is in the tool result.
    expect(toAnthropicMessages([broken.message]).messages).toEqual([{ role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_b', name: 'lookup', input: {} }] }]);
  });

  it('keeps a tool_use input that is not an object, saying so', async () => {
    server.enqueue(PATH, anthropicReply.message({ content: [{ type: 'tool_use', id: 'toolu_s', name: 'lookup', input: 'actor' }], stop: 'tool_use' }));
    const response = await provider().generate(request([msg.user('a')]), signal());
    expect(response.message.toolCalls).toEqual([{ id: 'toolu_s', name: 'lookup', args: 'actor', argsError: 'must be a JSON object, got a string' }]);
  });

  it('maps 529 and 429 (Retry-After as an HTTP date) to retryable, 400 and 401 to final failures, without the key', async () => {
    const later = new Date(Date.now() + 60_000).toUTCString();
    server.enqueue(
      PATH,
      anthropicReply.error(529, 'overloaded_error', 'Overloaded'),
      anthropicReply.error(429, 'rate_limit_error', 'Too many requests', { 'retry-after': later }),
      anthropicReply.error(400, 'invalid_request_error', 'messages: roles must alternate'),
      anthropicReply.error(401, 'authentication_error', `invalid x-api-key ${KEY}`),
    );
    const model = provider();
    const overloaded = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(overloaded).toMatchObject({ retryable: true, details: { status: 529 } });
    const limited = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(limited).toMatchObject({ retryable: true, details: { status: 429 } });
    expect(limited.retryAfterMs).toBeGreaterThan(55_000);
    expect(limited.retryAfterMs).toBeLessThanOrEqual(60_000);
    const invalid = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(invalid).toMatchObject({ retryable: false, details: { status: 400 } });
    expect(invalid.message).toBe('anthropic: HTTP 400: messages: roles must alternate');
    const denied = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(denied).toMatchObject({ retryable: false, details: { status: 401 } });
    expect(denied.message).toMatch(/invalid x-api-key \[redacted\]/);
    expect(JSON.stringify(serializeError(denied))).not.toContain(KEY);
  });

  it('fails without calling out when no key is configured', async () => {
    const model = anthropic({ baseURL: server.url, apiKeyEnv: 'TROUPE_TEST_UNSET_KEY' });
    const error = await failure(model.generate(request([msg.user('a')]), signal()));
    expect(error).toMatchObject({ retryable: false });
    expect(error.message).toMatch(/no API key: pass apiKey or set TROUPE_TEST_UNSET_KEY/);
    expect(server.requests).toHaveLength(0);
  });

  it('honours maxTokens, version, defaultModel and refuses bad options', async () => {
    server.enqueue(PATH, anthropicReply.message({ content: [{ type: 'text', text: 'ok' }] }));
    const model = provider({ maxTokens: 64, version: '2099-01-01', defaultModel: 'claude-default' });
    const response = await model.generate(request([msg.user('a')], { model: 'default', tools: [] }), signal());
    const [sent] = server.on(PATH);
    expect(sent!.headers['anthropic-version']).toBe('2099-01-01');
    expect(sent!.body).toEqual({ model: 'claude-default', max_tokens: 64, messages: [{ role: 'user', content: [{ type: 'text', text: 'a' }] }] });
    expect(response).toMatchObject({ message: { role: 'assistant', content: 'ok' }, finishReason: 'stop' });
    expect(() => anthropic({ maxTokens: 0 })).toThrow(/maxTokens must be a positive integer/);
    expect(() => anthropic({ baseURL: 'ftp://x' })).toThrow(TypeError);
  });
});

for (const stream of [false, true]) {
  modelProviderConformance(`anthropic (${stream ? 'streaming' : 'whole answers'})`, async () => {
    server.enqueue(
      PATH,
      stream
        ? anthropicReply.stream({
            events: [
              { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
              { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Actors ' } },
              { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'keep state.' } },
              { type: 'content_block_stop', index: 0 },
            ],
            stop: 'end_turn',
            usage: [9, 3],
          })
        : anthropicReply.message({ content: [{ type: 'text', text: 'Actors keep state.' }], usage: [9, 3] }),
    );
    return { provider: provider({ stream }), request: request([msg.user('What do actors keep?')]), streams: stream, close: async () => server.drain(PATH) };
  }, { describe, it, afterEach });
}
