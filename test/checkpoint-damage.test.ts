import { describe, expect, it } from 'vitest';
import { agent, createNode, crew, memoryStorage, scriptedModel } from '../index.js';
import { createRunStore } from '../core/run-store.js';
import { layout } from '../core/layout.js';

/** A conversation entry damaged on disk is reported when a checkpoint is rebuilt, never read as something else. */
describe('a damaged conversation log', () => {
  async function seeded() {
    const storage = memoryStorage();
    // Tool calls of a tool the agent lacks: each turn adds an answer and an error result.
    const turns = [...Array.from({ length: 5 }, (_, i) => ({ text: `turn ${i}`, toolCalls: [{ name: 'missing', args: {} }] })), 'done'];
    const def = crew({ id: 'dmg', agents: [agent({ id: 'a', role: 'a', instructions: 'a', model: 'scripted', maxSteps: 20 }), agent({ id: 'b', role: 'b', instructions: 'b', model: 'scripted' })] });
    const node = await createNode({ storage, models: { scripted: scriptedModel({ script: { a: turns, b: ['x'.repeat(10)] } }) } });
    await (await node.run(def, { input: 'go', runId: 'r1' })).settled();
    await node.close();
    const logs: Array<[string, Uint8Array]> = [];
    for await (const entry of storage.entries(layout.logs('r1'))) logs.push(entry);
    return { storage, logs };
  }

  it.each([
    ['a truncated entry', (v: Uint8Array) => v.subarray(0, v.length - 1)],
    ['an entry that swallows its neighbour', () => Uint8Array.of(0x92, 0x01)],
    ['an empty entry', () => new Uint8Array(0)],
  ])('with %s: rebuilding the checkpoint fails with STORAGE_CORRUPT naming the run', async (_what, damage) => {
    const { storage, logs } = await seeded();
    expect(logs.length).toBeGreaterThan(1);
    await storage.write([{ type: 'put', key: logs[1]![0], value: damage(logs[1]![1]) }]);
    await expect(createRunStore(storage).latestCheckpoint('r1')).rejects.toMatchObject({ code: 'STORAGE_CORRUPT', details: { runId: 'r1' } });
    await storage.close();
  });
});
