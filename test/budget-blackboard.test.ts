import { describe, expect, it } from 'vitest';
import { agent, createNode, crew, memoryStorage, scriptedModel, type RunEvent } from '../index.js';
import { createRunStore } from '../core/run-store.js';
import { levelStorage } from '../storage/level.js';
import type { Script } from '../models/scripted.js';
import { tempDir } from './helpers/temp.js';

const member = (id: string, extra: Partial<Parameters<typeof agent>[0]> = {}) => agent({ id, role: id, instructions: id, model: 'scripted', ...extra });
const lookups = (n: number, final: string) => [...Array.from({ length: n }, () => ({ toolCalls: [{ name: 'read_blackboard', args: {} }] })), final];

describe('budgets', () => {
  it('ends the run with BUDGET_EXCEEDED when the run runs out of model steps', async () => {
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: { a: lookups(2, 'a done'), b: lookups(2, 'b done') } }) } });
    const def = crew({ id: 'b', agents: [member('a'), member('b')], blackboard: true, budget: { maxSteps: 4 } });
    const result = await (await node.run(def, { input: 'x', runId: 'b1' })).settled();
    expect(result.status).toBe('failed');
    expect(result.error).toMatchObject({ code: 'BUDGET_EXCEEDED' });
    expect(result.error?.message).toMatch(/budget of the run exhausted: 4 model steps/);
  });

  it('enforces per-agent token budgets', async () => {
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: { a: lookups(5, 'done') } }) } });
    const def = crew({ id: 'b', agents: [member('a', { budget: { maxTokens: 30 } })], blackboard: true });
    const result = await (await node.run(def, { input: 'x', runId: 'b2' })).settled();
    expect(result.error?.message).toMatch(/budget of the agent a exhausted: 30 tokens \(used \d+\)/);
  });

  it('does not reset the budget when a run is stopped and resumed', async () => {
    await using storage = memoryStorage();
    const def = crew({ id: 'b', agents: [member('a')], blackboard: true, budget: { maxSteps: 3 } });
    const script = { a: lookups(3, 'done') }; // needs 4 steps
    const first = await createNode({ storage, models: { scripted: scriptedModel({ script, latencyMs: 5 }) } });
    const run = await first.run(def, { input: 'x', runId: 'b3' });
    await new Promise<void>((resolve) => run.subscribe((e) => e.type === 'model.call' && e.callId.includes('/s2/') && resolve()));
    await first.close();
    const usage = (await createRunStore(storage).latestCheckpoint('b3'))!.usage!;
    expect(usage.total.steps).toBeGreaterThanOrEqual(2);
    await using second = await createNode({ storage, models: { scripted: scriptedModel({ script }) }, crews: [def] });
    const result = await second.get('b3')!.settled();
    expect(result.error).toMatchObject({ code: 'BUDGET_EXCEEDED' });
    expect((await createRunStore(storage).latestCheckpoint('b3'))!.usage!.total.steps).toBe(3);
  });
});

describe('blackboard', () => {
  const writerThenReader = (): Script => ({
    writer: [{ toolCalls: [{ name: 'write_blackboard', args: { key: 'plan', value: { steps: ['a', 'b'] } } }] }, 'written'],
    reader: [{ toolCalls: [{ name: 'read_blackboard', args: { key: 'plan' } }] }, 'read'],
  });

  it('is shared by the agents of a crew through tools', async () => {
    const seen: string[] = [];
    const script = writerThenReader();
    const spy: Script = (req) => {
      const last = req.messages.at(-1)!;
      if (last.role === 'tool') seen.push(`${req.agent}:${last.content}`);
      return (script as Record<string, unknown[]>)[req.agent]![req.messages.filter((m) => m.role === 'assistant').length] as never;
    };
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: spy }) } });
    const def = crew({ id: 'bb', agents: [member('writer'), member('reader')], blackboard: { initial: { topic: 'mugs' } } });
    expect((await (await node.run(def, { input: 'x', runId: 'bb1' })).result()).output).toBe('read');
    expect(seen).toEqual(['writer:{"written":"plan"}', 'reader:{"steps":["a","b"]}']);
    const last = (await node.history('bb1')).at(-1)!;
    expect(last.states.blackboard).toBeUndefined(); // a store has no state value; its context is in the snapshot
  });

  it('survives a crew killed mid-run and resumed on LevelDB', async () => {
    await using dir = await tempDir();
    const def = crew({ id: 'bb', agents: [member('writer'), member('reader', { model: 'reader-model' })], blackboard: true });
    const seen: string[] = [];
    {
      await using storage = await levelStorage({ path: dir.path });
      // The reader's model never answers in this process: the run is cut while the reader plans.
      const models = { scripted: scriptedModel({ script: writerThenReader() }), 'reader-model': scriptedModel({ script: writerThenReader(), latencyMs: 600_000 }) };
      await using node = await createNode({ storage, models });
      const run = await node.run(def, { input: 'x', runId: 'bb2' });
      await new Promise<void>((resolve) => run.subscribe((e: RunEvent) => e.type === 'state' && e.actor === 'reader' && e.state === 'planning' && resolve()));
    }
    await using storage = await levelStorage({ path: dir.path });
    const script = writerThenReader();
    const spy: Script = (req) => {
      const last = req.messages.at(-1)!;
      if (last.role === 'tool') seen.push(`${req.agent}:${last.content}`);
      return (script as Record<string, unknown[]>)[req.agent]![req.messages.filter((m) => m.role === 'assistant').length] as never;
    };
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: spy }), 'reader-model': scriptedModel({ script: spy }) }, crews: [def] });
    expect((await node.get('bb2')!.result()).output).toBe('read');
    expect(seen).toEqual(['reader:{"steps":["a","b"]}']);
  });
});

describe('run.events()', () => {
  it('yields typed events until the run ends', async () => {
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: { a: ['hi'] }, latencyMs: 1 }) } });
    const run = await node.run(crew({ id: 'e', agents: [member('a')] }), { input: 'x', runId: 'e1' });
    const types: string[] = [];
    for await (const event of run.events()) types.push(event.type);
    expect(types).toContain('model.call');
    expect(types).toContain('checkpoint');
    expect(types.at(-1)).toBe('run.completed');
  });
});
