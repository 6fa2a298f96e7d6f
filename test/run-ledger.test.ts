import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, memoryStorage, scriptedModel, tool, type ModelProvider, type Storage } from '../index.js';
import { createRunStore } from '../core/run-store.js';
import { layout } from '../core/layout.js';

/**
 * A restored run does not read its effect ledger back (core/run-ledger.ts): a call asks for
 * its own entry by id; only effect inheritance loads the whole ledger, and only when it runs.
 */

/** Records the ranges and keys read and the keys of each batch, so a test can say what a restore touched. */
function watchedStorage(inner: Storage) {
  const reads = { ranges: [] as string[], gets: [] as string[], writes: [] as string[][] };
  const storage = new Proxy(inner, {
    get(target, property) {
      if (property === 'get') return (key: string) => (reads.gets.push(key), target.get(key));
      if (property === 'write') return (ops: Parameters<Storage['write']>[0], options: Parameters<Storage['write']>[1]) => (reads.writes.push(ops.map((op) => op.key)), target.write(ops, options));
      if (property === 'entries') return (range: Parameters<Storage['entries']>[0]) => (reads.ranges.push(range.gte ?? ''), target.entries(range));
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { storage, reads };
}

const ledgerPrefix = layout.ledgers('r1').gte!;

/** A model that plays `turns` of agent `a` in order and then waits, until aborted, at `stopAt`. */
function stoppingModel(turns: number, stopAt: number, reached: () => void): ModelProvider {
  return {
    id: 'scripted',
    async generate(request, { signal }) {
      const turn = request.messages.filter((m) => m.role === 'assistant').length;
      if (turn === stopAt) {
        reached();
        return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }));
      }
      const message = turn < turns ? { role: 'assistant' as const, content: '', toolCalls: [{ id: `call_${turn}`, name: 'send', args: { to: `p${turn}` } }] } : { role: 'assistant' as const, content: 'done' };
      return { message, usage: { inputTokens: 1, outputTokens: 1 } };
    },
  };
}

function sendTool(effect: 'read' | 'irreversible') {
  const sent: string[] = [];
  const t = tool({
    name: 'send',
    description: 'Sends a message.',
    input: z.object({ to: z.string() }),
    effect,
    run: ({ to }) => {
      sent.push(to);
      return { sent: to };
    },
  });
  return { tool: t, sent };
}

describe('the effect ledger of a restored run', () => {
  it('is not read at restore; a replayed call reads its own entry by id', async () => {
    const inner = memoryStorage();
    const { tool: send } = sendTool('read');
    const def = () => crew({ id: 'lazy', agents: [agent({ id: 'a', role: 'a', instructions: 'a', model: 'scripted', tools: [send], maxSteps: 50 })] });
    let reached!: () => void;
    const stopped = new Promise<void>((resolve) => (reached = resolve));
    {
      const node = await createNode({ storage: inner, models: { scripted: stoppingModel(30, 20, reached) }, crews: [def()] });
      await node.run(def(), { input: 'go', runId: 'r1' });
      await stopped;
      await node.close();
    }
    expect((await createRunStore(inner).ledger('r1')).length).toBeGreaterThanOrEqual(40);
    const { storage, reads } = watchedStorage(inner);
    const node = await createNode({ storage, models: { scripted: stoppingModel(30, 99, () => {}) }, crews: [def()] });
    const run = node.get('r1')!;
    expect(run).toBeDefined();
    // Nothing but (once its conversation is read back) the entry of the call that was in
    // flight, which the agent asks for again.
    expect(reads.ranges.filter((r) => r.startsWith(ledgerPrefix))).toEqual([]);
    expect(reads.gets.filter((k) => k.startsWith(ledgerPrefix) && k !== layout.ledger('r1', 'a/t1/s21/model'))).toEqual([]);
    const result = await run.result();
    expect(result).toMatchObject({ status: 'completed', output: 'done' });
    // Only the call in flight looked in storage: found absent, the agent's later calls are new.
    expect(reads.gets.filter((k) => k.startsWith(ledgerPrefix))).toEqual([layout.ledger('r1', 'a/t1/s21/model')]);
    expect(reads.ranges.filter((r) => r.startsWith(ledgerPrefix))).toEqual([]);
    // And a step after the resume writes the answer with the intent of the tool it asks for.
    const batch = reads.writes.find((keys) => keys.includes(layout.ledger('r1', 'a/t1/s21/tool/call_20')));
    expect(batch).toContain(layout.ledger('r1', 'a/t1/s21/model'));
    await node.close();
    await inner.close();
  });

  it('replays a result recorded after the checkpoint it resumes from, read by its id', async () => {
    const inner = memoryStorage();
    const { tool: send, sent } = sendTool('irreversible');
    const def = () => crew({ id: 'lazy', agents: [agent({ id: 'a', role: 'a', instructions: 'a', model: 'scripted', tools: [send] })] });
    let reached!: () => void;
    const stopped = new Promise<void>((resolve) => (reached = resolve));
    {
      const node = await createNode({ storage: inner, models: { scripted: stoppingModel(2, 2, reached) }, crews: [def()] });
      await node.run(def(), { input: 'go', runId: 'r1' });
      await stopped;
      await node.close();
    }
    expect(sent).toEqual(['p0', 'p1']);
    const node = await createNode({ storage: inner, models: { scripted: stoppingModel(2, 99, () => {}) }, crews: [def()] });
    expect(await node.get('r1')!.result()).toMatchObject({ status: 'completed', output: 'done' });
    expect(sent).toEqual(['p0', 'p1']);
    await node.close();
    await inner.close();
  });

  it('is loaded whole when a supervision restart after the resume inherits an effect recorded before it', async () => {
    const inner = memoryStorage();
    const { tool: send, sent } = sendTool('irreversible');
    const def = () =>
      crew({
        id: 'lazy',
        agents: [agent({ id: 'a', role: 'a', instructions: 'a', model: 'scripted', tools: [send], retry: { maxAttempts: 1, initialDelayMs: 1, maxDelayMs: 1 } })],
        supervision: { strategy: 'oneForOne', initialDelayMs: 1, maxRestarts: 2 },
      });
    let reached!: () => void;
    const stopped = new Promise<void>((resolve) => (reached = resolve));
    {
      const node = await createNode({ storage: inner, models: { scripted: stoppingModel(1, 1, reached) }, crews: [def()] });
      await node.run(def(), { input: 'go', runId: 'r1' });
      await stopped;
      await node.close();
    }
    expect(sent).toEqual(['p0']);
    // After the resume the task's second turn fails for good: supervision restarts the task,
    // whose first call (the same send) must take over the effect of the first process.
    const { storage, reads } = watchedStorage(inner);
    const models = { scripted: scriptedModel({ script: { a: [{ toolCalls: [{ name: 'send', args: { to: 'p0' } }] }, { text: 'done', failFirst: 1 }] } }) };
    const node = await createNode({ storage, models, crews: [def()] });
    expect(await node.get('r1')!.result()).toMatchObject({ status: 'completed', output: 'done' });
    expect(sent).toEqual(['p0']);
    expect(reads.ranges.filter((r) => r.startsWith(ledgerPrefix))).toHaveLength(1);
    const inherited = (await createRunStore(inner).ledger('r1')).find((e) => e.inheritedFrom);
    expect(inherited).toMatchObject({ inheritedFrom: 'a/t1/s1/tool/call_0', status: 'done' });
    await node.close();
    await inner.close();
  });
});
