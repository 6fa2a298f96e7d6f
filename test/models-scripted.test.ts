import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, memoryStorage, tool, type CrewOutput, type ModelProvider } from '../index.js';
import { createRunStore } from '../core/run-store.js';
import { scriptedModel, type Script } from '../models/scripted.js';
import { levelStorage } from '../storage/level.js';
import { tempDir } from './helpers/temp.js';
import { modelProviderConformance } from '../testing/model-conformance.js';

// The offline model the examples and most tests run on keeps the same contract as the real
// providers (it does not stream).
modelProviderConformance('scriptedModel', async () => ({
  provider: scriptedModel({ script: { writer: ['Actors keep state.'] } }),
  request: { model: 'default', messages: [{ role: 'user', content: 'What do actors keep?' }], tools: [], agent: 'writer', runId: 'r1', step: 1, phase: 'plan', attempt: 0 },
  streams: false,
}), { describe, it, afterEach });

/** A round-robin group chat of `a` and `b` that ends after six lines. */
const chat = crew({
  id: 'chat',
  process: { type: 'groupChat', selector: 'roundRobin', maxRounds: 6 },
  agents: [agent({ id: 'a', role: 'a', instructions: 'You are a.', model: 'scripted' }), agent({ id: 'b', role: 'b', instructions: 'You are b.', model: 'scripted' })],
});
const chatScript = { a: ['a1', 'a2', 'a3'], b: ['b1', 'b2', 'b3'] };
const spoken = (output: unknown) => (output as CrewOutput).transcript.map((l) => `${l.speaker}: ${l.content}`);

describe('scriptedModel turn choice', () => {
  it('gives a group-chat speaker turns 1, 2 and 3 of its script in rounds 1, 2 and 3', async () => {
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: chatScript }) } });
    const run = await node.run(chat, { input: 'talk', runId: 'g1' });
    const result = await run.settled();
    expect(result.status).toBe('completed');
    const snapshot = await createRunStore(storage).latestCheckpoint('g1');
    expect(spoken((snapshot!.snapshot as { output: unknown }).output)).toEqual(['a: a1', 'b: b1', 'a: a2', 'b: b2', 'a: a3', 'b: b3']);
  });

  it('continues a worker delegated twice where its first task left off', async () => {
    const script = {
      boss: [
        { toolCalls: [{ name: 'delegate', args: { agent: 'worker', task: 'one' } }] },
        { toolCalls: [{ name: 'delegate', args: { agent: 'worker', task: 'two' } }] },
        'both done',
      ],
      worker: [{ toolCalls: [{ name: 'echo', args: { text: 'x' } }] }, 'first answer', 'second answer'],
    };
    const echo = tool({ name: 'echo', description: 'Echoes.', input: z.object({ text: z.string() }), effect: 'read', run: ({ text }) => text });
    const answers: string[] = [];
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script }) } });
    node.subscribe((e) => e.type === 'message' && e.messageType === 'result' && e.from.endsWith('/worker') && answers.push(e.to));
    const def = crew({
      id: 'boss-worker',
      process: { type: 'hierarchical', manager: 'boss' },
      agents: [agent({ id: 'boss', role: 'b', instructions: 'b', model: 'scripted' }), agent({ id: 'worker', role: 'w', instructions: 'w', model: 'scripted', tools: [echo] })],
    });
    const run = await node.run(def, { input: 'go', runId: 'h1' });
    expect(await run.result()).toMatchObject({ status: 'completed', output: 'both done' });
    const delegateResults = (await createRunStore(storage).ledger('h1'))
      .filter((e) => e.kind === 'model' && e.callId.startsWith('worker/'))
      .map((e) => (e.result as { message: { content: string } }).message.content);
    expect(delegateResults).toEqual(['', 'first answer', 'second answer']);
    expect(answers).toHaveLength(2);
  });

  it('hands the function form the request and the turn the record form would play', async () => {
    const seen: string[] = [];
    const script: Script = (request, { turn }) => {
      seen.push(`${request.agent}#${turn} step ${request.step}`);
      return `${request.agent}${turn + 1}`;
    };
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script }) } });
    expect((await (await node.run(chat, { input: 'talk', runId: 'f1' })).result()).output).toBe('b3');
    expect(seen).toEqual(['a#0 step 1', 'b#0 step 1', 'a#1 step 1', 'b#1 step 1', 'a#2 step 1', 'b#2 step 1']);
  });

  it('continues the script where it was when a run resumes on a new node', async () => {
    await using dir = await tempDir();
    const scripted = scriptedModel({ script: chatScript });
    let entered!: () => void;
    const inFlight = new Promise<void>((resolve) => (entered = resolve));
    // a's second line (round 3) never answers on the first node: it closes with the call in flight.
    const hanging: ModelProvider = {
      id: 'scripted',
      generate: (req, ctx) => {
        if (req.agent !== 'a' || !req.messages[1]!.content.includes('b: b1')) return scripted.generate(req, ctx);
        entered();
        return new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true }));
      },
    };
    {
      await using storage = await levelStorage({ path: dir.path });
      await using node = await createNode({ storage, models: { scripted: hanging } });
      await node.run(chat, { input: 'talk', runId: 'r1' });
      await inFlight;
    }
    const asked: string[] = [];
    const second = scriptedModel({ script: chatScript });
    const counting: ModelProvider = { id: 'scripted', generate: (req, ctx) => (asked.push(req.agent), second.generate(req, ctx)) };
    await using storage = await levelStorage({ path: dir.path });
    await using node = await createNode({ storage, models: { scripted: counting }, crews: [chat] });
    const result = await node.get('r1')!.result();
    expect(result).toMatchObject({ status: 'completed', output: 'b3' });
    // Only what had not been answered is asked again, and it gets the turns an uncrashed run would.
    expect(asked).toEqual(['a', 'b', 'a', 'b']);
    const snapshot = await createRunStore(storage).latestCheckpoint('r1');
    expect(spoken((snapshot!.snapshot as { output: unknown }).output)).toEqual(['a: a1', 'b: b1', 'a: a2', 'b: b2', 'a: a3', 'b: b3']);
  });
});
