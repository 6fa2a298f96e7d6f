import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { agent, anthropic, createNode, crew, memoryStorage, openAICompatible, scriptedModel, type ModelRequest, type ModelSettings } from '../index.js';
import { anthropicReply, openai, useFakeLLMServer } from './helpers/fake-llm-server.js';

const OPENAI = '/v1/chat/completions';
const ANTHROPIC = '/v1/messages';

const server = useFakeLLMServer();

const settings: ModelSettings = {
  temperature: 0.3,
  maxOutputTokens: 256,
  topP: 0.9,
  seed: 7,
  stopSequences: ['END'],
  providerOptions: { openai: { user: 'crew-7', messages: 'not mine to set' }, anthropic: { metadata: { user_id: 'u1' } }, local: { top_k: 20 } },
};

/** Runs a one-agent crew on `model` with the settings above and returns its output. */
async function runWith(model: string, models: Parameters<typeof createNode>[0]['models'], agentSettings: ModelSettings = settings) {
  await using node = await createNode({ storage: memoryStorage(), models });
  const solo = crew({ id: 'solo', agents: [agent({ id: 'writer', role: 'writes', instructions: 'Write.', model, settings: agentSettings })] });
  return (await (await node.run(solo, { input: 'a line' })).result()).output;
}

describe('agent settings', () => {
  it('reach an OpenAI-compatible server as temperature, max_tokens, top_p, seed and stop, with providerOptions.openai merged in', async () => {
    server.enqueue(OPENAI, openai.completion({ content: 'done' }));
    const output = await runWith('openai:gpt-test', { openai: openAICompatible({ baseURL: `${server.url}/v1`, apiKey: 'k' }) });
    expect(output).toBe('done');
    const [sent] = server.on(OPENAI);
    expect(sent!.body).toMatchObject({ model: 'gpt-test', temperature: 0.3, max_tokens: 256, top_p: 0.9, seed: 7, stop: ['END'], user: 'crew-7' });
    // Provider options cannot replace the conversation the provider built.
    expect(sent!.body.messages).toEqual([
      { role: 'system', content: 'Write.' },
      { role: 'user', content: 'a line', name: 'crew' },
    ]);
    expect(sent!.body).not.toHaveProperty('metadata');
  });

  it('send max_completion_tokens instead when the provider is told to, and the options of its own id on top', async () => {
    server.enqueue(OPENAI, openai.completion({ content: 'done' }));
    const local = openAICompatible({ id: 'local', baseURL: `${server.url}/v1`, maxTokensField: 'max_completion_tokens' });
    await runWith('local:llama', { local });
    const [sent] = server.on(OPENAI);
    expect(sent!.body).toMatchObject({ max_completion_tokens: 256, top_k: 20, user: 'crew-7' });
    expect(sent!.body).not.toHaveProperty('max_tokens');
  });

  it('reach the Anthropic Messages API as temperature, max_tokens, top_p and stop_sequences, with providerOptions.anthropic merged in', async () => {
    server.enqueue(ANTHROPIC, anthropicReply.message({ content: [{ type: 'text', text: 'done' }] }));
    const output = await runWith('anthropic:claude-test', { anthropic: anthropic({ baseURL: server.url, apiKey: 'k', maxTokens: 1024 }) });
    expect(output).toBe('done');
    const [sent] = server.on(ANTHROPIC);
    expect(sent!.body).toMatchObject({ model: 'claude-test', temperature: 0.3, max_tokens: 256, top_p: 0.9, stop_sequences: ['END'], metadata: { user_id: 'u1' }, system: 'Write.' });
    expect(sent!.body).not.toHaveProperty('seed'); // the Messages API has none
    expect(sent!.body).not.toHaveProperty('user');
  });

  it('leave an HTTP body as it was when an agent sets none', async () => {
    server.enqueue(ANTHROPIC, anthropicReply.message({ content: [{ type: 'text', text: 'done' }] }));
    await using node = await createNode({ storage: memoryStorage(), models: { anthropic: anthropic({ baseURL: server.url, apiKey: 'k' }) } });
    const solo = crew({ id: 'solo', agents: [agent({ id: 'writer', role: 'writes', instructions: 'Write.', model: 'anthropic:claude-test' })] });
    await (await node.run(solo, { input: 'a line' })).result();
    expect(Object.keys(server.on(ANTHROPIC)[0]!.body).sort()).toEqual(['max_tokens', 'messages', 'model', 'system']);
  });

  it('travel in every model request, so a scripted model can see them', async () => {
    const seen: Array<ModelRequest['settings']> = [];
    const scripted = scriptedModel({
      script: (request) => {
        seen.push(request.settings);
        return 'ok';
      },
    });
    expect(await runWith('scripted', { scripted }, { temperature: 0, stopSequences: ['\n\n'] })).toBe('ok');
    expect(seen).toEqual([{ temperature: 0, stopSequences: ['\n\n'] }]);
  });

  it.each([
    [{ temperature: -1 }, /agent "writer": settings\.temperature must be a number ≥ 0/],
    [{ temperature: '0.2' }, /settings\.temperature must be a number/],
    [{ maxOutputTokens: 1.5 }, /settings\.maxOutputTokens must be a positive integer/],
    [{ maxOutputTokens: 0 }, /settings\.maxOutputTokens must be a positive integer/],
    [{ topP: 1.2 }, /settings\.topP must be a number from 0 to 1/],
    [{ seed: 0.5 }, /settings\.seed must be an integer/],
    [{ stopSequences: 'END' }, /settings\.stopSequences must be an array of strings/],
    [{ stopSequences: [''] }, /settings\.stopSequences\[0\] must not be empty/],
    [{ providerOptions: { openai: 'fast' } }, /settings\.providerOptions\.openai must be an object of provider-specific fields/],
    [{ maxTokens: 100 }, /settings has unknown key "maxTokens" \(known: temperature, maxOutputTokens/],
    ['hot', /agent "writer": settings must be an object/],
  ])('refuse %j at definition with a TypeError that states the rule', (bad, rule) => {
    const define = () => agent({ id: 'writer', role: 'writes', instructions: 'Write.', model: 'scripted', settings: bad as ModelSettings });
    expect(define).toThrow(TypeError);
    expect(define).toThrow(rule);
  });
});
