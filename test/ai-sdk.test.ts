import { APICallError, type LanguageModelV3GenerateResult, type LanguageModelV3StreamPart } from '@ai-sdk/provider';
import { convertArrayToReadableStream, MockLanguageModelV3 } from 'ai/test';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { aiSdkModel } from 'troupe/ai-sdk';
import { agent, createNode, crew, ErrorCode, memoryStorage, msg, tool, TroupeError, type ModelRequest, type RunEvent } from '../index.js';
import { modelProviderConformance } from '../testing/model-conformance.js';
import { failure } from './helpers/failure.js';

const usage = (input: number, output: number): LanguageModelV3GenerateResult['usage'] => ({
  inputTokens: { total: input, noCache: input, cacheRead: 0, cacheWrite: 0 },
  outputTokens: { total: output, text: output, reasoning: 0 },
});
const answer = (content: LanguageModelV3GenerateResult['content'], reason: 'stop' | 'tool-calls' | 'length' = 'stop', tokens: [number, number] = [12, 4]): LanguageModelV3GenerateResult => ({
  content,
  finishReason: { unified: reason, raw: reason },
  usage: usage(...tokens),
  response: { modelId: 'mock-model-2026' },
  warnings: [],
});
const streamOf = (parts: LanguageModelV3StreamPart[]) => ({ stream: convertArrayToReadableStream(parts) });
const streamedText = (pieces: string[], tokens: [number, number] = [9, 3]): LanguageModelV3StreamPart[] => [
  { type: 'stream-start', warnings: [] },
  { type: 'response-metadata', modelId: 'mock-model-2026' },
  { type: 'text-start', id: 't' },
  ...pieces.map((delta): LanguageModelV3StreamPart => ({ type: 'text-delta', id: 't', delta })),
  { type: 'text-end', id: 't' },
  { type: 'finish', finishReason: { unified: 'stop', raw: 'stop' }, usage: usage(...tokens) },
];

const request = (extra: Partial<ModelRequest> = {}): ModelRequest => ({
  model: 'default',
  messages: [msg.system('Be brief.'), msg.user('Say hi.', 'crew')],
  tools: [],
  agent: 'writer',
  runId: 'r1',
  step: 1,
  phase: 'plan',
  attempt: 0,
  ...extra,
});
const signal = () => ({ signal: new AbortController().signal });

describe('aiSdkModel', () => {
  it('answers with the text, usage, finish reason and served model of doGenerate, sending the settings and the signal as call options', async () => {
    const model = new MockLanguageModelV3({ modelId: 'mock-model', doGenerate: answer([{ type: 'text', text: 'Hi ' }, { type: 'text', text: 'there.' }]) });
    const context = signal();
    const settings = { temperature: 0.1, maxOutputTokens: 64, topP: 0.5, seed: 3, stopSequences: ['END'], providerOptions: { openai: { reasoningEffort: 'low' } } };
    const response = await aiSdkModel(model, { headers: { 'x-team': 'a' }, prices: { 'mock-model-2026': { inputPerMTok: 1, outputPerMTok: 2 } } }).generate(request({ settings }), context);

    expect(response).toEqual({
      message: { role: 'assistant', content: 'Hi there.' },
      usage: { inputTokens: 12, outputTokens: 4 },
      model: 'ai-sdk:mock-model-2026',
      finishReason: 'stop',
      cost: (12 * 1 + 4 * 2) / 1e6,
    });
    const [call] = model.doGenerateCalls;
    expect(call).toEqual({
      prompt: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: [{ type: 'text', text: 'Say hi.' }] },
      ],
      temperature: 0.1,
      maxOutputTokens: 64,
      topP: 0.5,
      seed: 3,
      stopSequences: ['END'],
      providerOptions: { openai: { reasoningEffort: 'low' } },
      headers: { 'x-team': 'a' },
      abortSignal: context.signal,
    });
  });

  it('round-trips tool calls through a crew run: Troupe tools as function tools with JSON schema, calls and results back', async () => {
    const looked: string[] = [];
    const lookup = tool({
      name: 'lookup',
      description: 'Looks a word up.',
      input: z.object({ word: z.string() }),
      effect: 'read',
      run: async ({ word }) => {
        looked.push(word);
        return `${word}: a definition`;
      },
    });
    const model = new MockLanguageModelV3({
      doGenerate: [
        answer([{ type: 'text', text: 'Looking it up.' }, { type: 'tool-call', toolCallId: 'tc_1', toolName: 'lookup', input: '{"word":"actor"}' }], 'tool-calls'),
        answer([{ type: 'text', text: 'An actor owns its state.' }]),
      ],
    });
    await using node = await createNode({ storage: memoryStorage(), models: { ai: aiSdkModel(model, { id: 'ai' }) } });
    const solo = crew({ id: 'solo', agents: [agent({ id: 'researcher', role: 'researches', instructions: 'Research.', model: 'ai', tools: [lookup] })] });
    const result = await (await node.run(solo, { input: 'What is an actor?' })).result();

    expect(result.output).toBe('An actor owns its state.');
    expect(looked).toEqual(['actor']);
    const [first, second] = model.doGenerateCalls;
    expect(first!.tools).toEqual([
      {
        type: 'function',
        name: 'lookup',
        description: 'Looks a word up.',
        inputSchema: expect.objectContaining({ type: 'object', properties: { word: { type: 'string' } }, required: ['word'] }),
      },
    ]);
    expect(first!.toolChoice).toEqual({ type: 'auto' });
    expect(second!.prompt.slice(2)).toEqual([
      { role: 'assistant', content: [{ type: 'text', text: 'Looking it up.' }, { type: 'tool-call', toolCallId: 'tc_1', toolName: 'lookup', input: { word: 'actor' } }] },
      { role: 'tool', content: [{ type: 'tool-result', toolCallId: 'tc_1', toolName: 'lookup', output: { type: 'text', value: 'actor: a definition' } }] },
    ]);
  });

  it('hands unreadable tool arguments back to the model as an error result, and failed tools as error-text', async () => {
    const model = new MockLanguageModelV3({
      doGenerate: [answer([{ type: 'tool-call', toolCallId: 'tc_1', toolName: 'lookup', input: '{"word": act' }], 'tool-calls'), answer([{ type: 'text', text: 'Sorry.' }])],
    });
    const lookup = tool({ name: 'lookup', description: 'Looks a word up.', input: z.object({ word: z.string() }), effect: 'read', run: async () => 'never' });
    await using node = await createNode({ storage: memoryStorage(), models: { ai: aiSdkModel(model, { id: 'ai' }) } });
    const solo = crew({ id: 'solo', agents: [agent({ id: 'researcher', role: 'researches', instructions: 'Research.', model: 'ai', tools: [lookup] })] });
    expect((await (await node.run(solo, { input: 'go' })).result()).output).toBe('Sorry.');
    const [assistantTurn, toolTurn] = model.doGenerateCalls[1]!.prompt.slice(2);
    expect(assistantTurn).toEqual({ role: 'assistant', content: [{ type: 'tool-call', toolCallId: 'tc_1', toolName: 'lookup', input: {} }] });
    expect(toolTurn).toMatchObject({ role: 'tool', content: [{ type: 'tool-result', toolCallId: 'tc_1', output: { type: 'error-text', value: expect.stringMatching(/^error: invalid arguments for lookup: /) } }] });
  });

  it('streams text through onToken and the run’s model.token events, assembling text and tool calls from doStream', async () => {
    const model = new MockLanguageModelV3({
      doStream: [
        streamOf([
          { type: 'stream-start', warnings: [] },
          { type: 'text-start', id: 't' },
          { type: 'text-delta', id: 't', delta: 'Check' },
          { type: 'text-delta', id: 't', delta: 'ing.' },
          { type: 'text-end', id: 't' },
          { type: 'tool-input-start', id: 'tc_1', toolName: 'lookup' },
          { type: 'tool-input-delta', id: 'tc_1', delta: '{"word":"x"}' },
          { type: 'tool-input-end', id: 'tc_1' },
          { type: 'tool-call', toolCallId: 'tc_1', toolName: 'lookup', input: '{"word":"x"}' },
          { type: 'finish', finishReason: { unified: 'tool-calls', raw: 'tool_use' }, usage: usage(20, 8) },
        ]),
        streamOf(streamedText(['Done', ' now.'])),
      ],
    });
    const listened: string[] = [];
    const lookup = tool({ name: 'lookup', description: 'Looks a word up.', input: z.object({ word: z.string() }), effect: 'read', run: async ({ word }) => `${word}!` });
    await using node = await createNode({ storage: memoryStorage(), models: { ai: aiSdkModel(model, { id: 'ai', stream: true, onToken: (text) => listened.push(text) }) } });
    const events: RunEvent[] = [];
    node.subscribe((e) => events.push(e));
    const solo = crew({ id: 'solo', agents: [agent({ id: 'researcher', role: 'researches', instructions: 'Research.', model: 'ai', tools: [lookup] })] });
    const result = await (await node.run(solo, { input: 'go' })).result();

    expect(result.output).toBe('Done now.');
    expect(listened).toEqual(['Check', 'ing.', 'Done', ' now.']);
    expect(events.flatMap((e) => (e.type === 'model.token' ? [e.text] : []))).toEqual(['Check', 'ing.', 'Done', ' now.']);
    expect(events.filter((e) => e.type === 'model.call').map((e) => (e as { usage: unknown }).usage)).toEqual([
      { inputTokens: 20, outputTokens: 8 },
      { inputTokens: 9, outputTokens: 3 },
    ]);
    expect(model.doStreamCalls[1]!.prompt.at(-1)).toEqual({ role: 'tool', content: [{ type: 'tool-result', toolCallId: 'tc_1', toolName: 'lookup', output: { type: 'text', value: 'x!' } }] });
  });

  it('maps finish reasons: length, content filter, and tool calls the provider ran itself are left out', async () => {
    const cases = [
      { result: answer([{ type: 'text', text: 'cut' }], 'length'), finishReason: 'length' },
      { result: { ...answer([{ type: 'text', text: 'no' }]), finishReason: { unified: 'content-filter', raw: 'content_filter' } }, finishReason: 'error' },
      { result: answer([{ type: 'text', text: 'found' }, { type: 'tool-call', toolCallId: 'ws', toolName: 'web_search', input: '{}', providerExecuted: true }]), finishReason: 'stop' },
    ] as const;
    for (const c of cases) {
      const response = await aiSdkModel(new MockLanguageModelV3({ doGenerate: c.result as LanguageModelV3GenerateResult })).generate(request(), signal());
      expect(response.finishReason).toBe(c.finishReason);
      expect(response.message.toolCalls).toBeUndefined();
    }
  });

  it('maps a 429 APICallError to a retryable MODEL_FAILED with the server’s Retry-After, and a 400 to a final one', async () => {
    const apiError = (statusCode: number, headers: Record<string, string> = {}) =>
      new APICallError({ message: `status ${statusCode}`, url: 'https://api.example/v1', requestBodyValues: {}, statusCode, responseHeaders: headers, isRetryable: statusCode === 429 });
    const limited = await failure(aiSdkModel(new MockLanguageModelV3({ doGenerate: async () => { throw apiError(429, { 'retry-after': '2' }); } })).generate(request(), signal()));
    expect(limited).toBeInstanceOf(TroupeError);
    expect(limited).toMatchObject({ code: ErrorCode.MODEL_FAILED, retryable: true, retryAfterMs: 2000, details: { provider: 'ai-sdk', status: 429, reason: 'http' } });
    expect((limited as Error).message).toBe('ai-sdk: HTTP 429: status 429');

    const overloaded = await failure(aiSdkModel(new MockLanguageModelV3({ doGenerate: async () => { throw apiError(503); } })).generate(request(), signal()));
    expect(overloaded).toMatchObject({ code: ErrorCode.MODEL_FAILED, retryable: true, details: { status: 503 } });
    expect((overloaded as TroupeError).retryAfterMs).toBeUndefined();

    const refused = await failure(aiSdkModel(new MockLanguageModelV3({ doGenerate: async () => { throw apiError(400); } })).generate(request(), signal()));
    expect(refused).toMatchObject({ code: ErrorCode.MODEL_FAILED, retryable: false, details: { status: 400 } });
  });

  it('fails on an error part of a stream, and on a stream that ends without finishing', async () => {
    const broken = await failure(
      aiSdkModel(new MockLanguageModelV3({ doStream: streamOf([{ type: 'text-delta', id: 't', delta: 'par' }, { type: 'error', error: new APICallError({ message: 'overloaded', url: 'u', requestBodyValues: {}, statusCode: 529 }) }]) }), { stream: true }).generate(request(), signal()),
    );
    expect(broken).toMatchObject({ code: ErrorCode.MODEL_FAILED, retryable: true, details: { status: 529 } });
    const cut = await failure(aiSdkModel(new MockLanguageModelV3({ doStream: streamOf(streamedText(['a']).slice(0, -1)) }), { stream: true }).generate(request(), signal()));
    expect(cut).toMatchObject({ code: ErrorCode.MODEL_FAILED, retryable: true, message: 'ai-sdk: stream ended before the answer was complete' });
  });

  it('retries a step whose call failed with a retryable error, then completes the run', async () => {
    let calls = 0;
    const model = new MockLanguageModelV3({
      doGenerate: async () => {
        calls += 1;
        if (calls === 1) throw new APICallError({ message: 'busy', url: 'u', requestBodyValues: {}, statusCode: 503 });
        return answer([{ type: 'text', text: 'second time lucky' }]);
      },
    });
    await using node = await createNode({ storage: memoryStorage(), models: { ai: aiSdkModel(model, { id: 'ai' }) } });
    const solo = crew({ id: 'solo', agents: [agent({ id: 'writer', role: 'writes', instructions: 'Write.', model: 'ai', retry: { initialDelayMs: 1, maxDelayMs: 1 } })] });
    expect((await (await node.run(solo, { input: 'go' })).result()).output).toBe('second time lucky');
    expect(calls).toBe(2);
  });

  it('rejects with the signal’s reason when the run stops mid-stream, and cancels the stream', async () => {
    const controller = new AbortController();
    let cancelled: unknown;
    const stream = new ReadableStream<LanguageModelV3StreamPart>({
      start(c) {
        c.enqueue({ type: 'text-delta', id: 't', delta: 'first' });
      },
      cancel(reason) {
        cancelled = reason;
      },
    });
    const reason = new Error('run stopped');
    const provider = aiSdkModel(new MockLanguageModelV3({ doStream: async () => ({ stream }) }), { stream: true, onToken: () => controller.abort(reason) });
    await expect(provider.generate(request(), { signal: controller.signal })).rejects.toBe(reason);
    expect(cancelled).toBe(reason);
  });

  it('says which model references it serves, and refuses what is not an AI SDK v3 model', () => {
    const provider = aiSdkModel(new MockLanguageModelV3({ modelId: 'gpt-x' }), { id: 'ai' });
    expect(provider.check?.('default')).toBeUndefined();
    expect(provider.check?.('gpt-x')).toBeUndefined();
    expect(provider.check?.('gpt-y')).toBe('provider "ai" serves the AI SDK model "gpt-x" only; write "ai" or "ai:gpt-x", not "ai:gpt-y"');
    expect(() => aiSdkModel({} as never)).toThrow(/needs an AI SDK language model/);
    expect(() => aiSdkModel({ ...new MockLanguageModelV3(), specificationVersion: 'v2', doGenerate: async () => ({}), doStream: async () => ({}) } as never)).toThrow(/specification v3 .* implements "v2"/);
  });
});

for (const stream of [false, true]) {
  modelProviderConformance(
    `aiSdkModel (${stream ? 'doStream' : 'doGenerate'})`,
    async () => {
      const model = new MockLanguageModelV3({ doGenerate: async () => answer([{ type: 'text', text: 'Hello from the mock.' }]), doStream: async () => streamOf(streamedText(['Hello ', 'from ', 'the mock.'])) });
      return { provider: aiSdkModel(model, { stream }), request: request(), streams: stream };
    },
    { describe, it, afterEach },
  );
}
