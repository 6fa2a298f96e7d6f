import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, memoryStorage, scriptedModel, tool } from '../index.js';
import { createRunStore } from '../core/run-store.js';
import { prefixRange } from '../core/storage.js';
import { layout } from '../core/layout.js';
import { decode } from '../core/codec.js';
import { isRetained, resolveRetention } from '../core/retention.js';

const noop = tool({ name: 'noop', description: 'Returns its argument.', input: z.object({ i: z.number() }), effect: 'read', run: ({ i }) => ({ ok: i }) });
const STEPS = 150;
const script = (req: { messages: readonly { role: string }[] }) => {
  const n = req.messages.filter((m) => m.role === 'assistant').length;
  return n < STEPS - 1 ? { text: `step ${n}`, toolCalls: [{ name: 'noop', args: { i: n } }] } : 'done';
};
// Two agents, one idle: its only record must survive every pruning.
const team = crew({
  id: 'long',
  agents: [
    agent({ id: 'worker', role: 'w', instructions: 'Work.', model: 'scripted', tools: [noop], maxSteps: STEPS + 5 }),
    agent({ id: 'idle', role: 'i', instructions: 'Wait.', model: 'scripted' }),
  ],
  process: { type: 'hierarchical', manager: 'worker' },
});

async function count(storage: ReturnType<typeof memoryStorage>, prefix: string) {
  let n = 0;
  for await (const _ of storage.entries(prefixRange(prefix))) n += 1;
  return n;
}

/** Conversation entries of a run, stored singly or packed into segments. */
async function logEntries(storage: ReturnType<typeof memoryStorage>, runId: string) {
  let n = await count(storage, `log:${runId}:`);
  for await (const [, value] of storage.entries(layout.logSegments(runId))) n += (decode(value, Infinity) as { n: number[] }).n.length;
  return n;
}

describe('checkpoint retention', () => {
  it('keeps the first, the newest keepLast and every keepEvery-th checkpoint, each still readable, and forks from a kept one', async () => {
    await using storage = memoryStorage();
    const retention = { keepLast: 10, keepEvery: 40 };
    await using node = await createNode({ storage, retention, models: { scripted: scriptedModel({ script }) } });
    const run = await node.run(team, { input: 'go', runId: 'long' });
    expect((await run.result()).output).toBe('done');
    const record = await createRunStore(storage).requireRun('long');
    const newest = record.checkpoint;
    expect(newest).toBeGreaterThan(2 * STEPS);
    const kept = (await node.history('long')).map((h) => h.seq);
    const expected = Array.from({ length: newest }, (_, i) => i + 1).filter((c) => isRetained(c, newest, resolveRetention(retention)));
    expect(kept).toEqual(expected);
    // Every kept checkpoint is whole: its records survived the pruning of its neighbours.
    const store = createRunStore(storage);
    for (const seq of kept) {
      const checkpoint = await store.checkpoint('long', seq);
      expect(checkpoint?.seq).toBe(seq);
      expect(Object.keys((checkpoint!.snapshot as { children: object }).children)).toEqual(expect.arrayContaining(['worker', 'idle']));
    }
    // Records of pruned checkpoints are gone: a bounded number, not one per step.
    expect(await count(storage, 'actor:long:')).toBeLessThan(4 * (kept.length + 4));
    // The conversation is content: every message is still there, once.
    expect(await logEntries(storage, 'long')).toBeGreaterThanOrEqual(2 * STEPS);
    const forked = await node.fork('long', { at: 80, runId: 'long-80', definition: team });
    expect((await forked.result()).output).toBe('done');
  });

  it('refuses a policy that would delete the checkpoint a resume needs', async () => {
    await using storage = memoryStorage();
    await expect(createNode({ storage, retention: { keepLast: 0 } })).rejects.toThrow(TypeError);
  });
});
