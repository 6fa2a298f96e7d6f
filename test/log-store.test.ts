import { describe, expect, it } from 'vitest';
import { createLogWriter, forkLogOps, readLogRange } from '../core/log-store.js';
import { layout } from '../core/layout.js';
import { memoryStorage } from '../storage/memory.js';
import type { LogEntry } from '../core/snapshot-parts.js';
import type { Storage } from '../core/storage.js';
import { z } from 'zod';
import { agent, createNode, crew, tool, type ModelProvider } from '../index.js';
import { createRunStore } from '../core/run-store.js';

/**
 * core/log-store.ts: conversation entries are written once each, packed into segments once
 * a log has enough of them singly, and read back the same whatever is packed.
 */

const identity = <T>(v: T) => v;

async function keysOf(storage: Storage, prefix: 'log' | 'logseg', runId: string) {
  const out: string[] = [];
  for await (const [key] of storage.entries(prefix === 'log' ? layout.logs(runId) : layout.logSegments(runId))) out.push(key);
  return out;
}

/** Appends `count` entries to log `a` (and every third to log `b`), one capture per entry. */
async function append(storage: Storage, writer: ReturnType<typeof createLogWriter>, from: number, count: number) {
  for (let n = from; n < from + count; n++) {
    const entries: LogEntry[] = [{ log: n % 3 === 0 ? 'b' : 'a', n, value: { text: `m${n}` } }];
    await storage.write(writer.write(entries));
  }
}

const texts = (values: unknown[]) => values.map((v) => (v as { text: string }).text);
const expected = (from: number, to: number, log: 'a' | 'b') => Array.from({ length: to - from }, (_, i) => from + i).filter((n) => (n % 3 === 0) === (log === 'b')).map((n) => `m${n}`);

describe('log store', () => {
  it('packs a log once it holds the segment size singly, deleting the singles in the same batch', async () => {
    await using storage = memoryStorage();
    const writer = createLogWriter({ runId: 'r', redact: identity, segmentEntries: 4 });
    await append(storage, writer, 1, 5); // a: 1 2 4 5 -> packed; b: 3
    expect(await keysOf(storage, 'logseg', 'r')).toEqual([layout.logSegment('r', 'a', 5)]);
    expect(await keysOf(storage, 'log', 'r')).toEqual([layout.log('r', 'b', 3)]);
  });

  it('reads any range the same, across segments and singles, also an older (shorter) one', async () => {
    await using storage = memoryStorage();
    const writer = createLogWriter({ runId: 'r', redact: identity, segmentEntries: 4 });
    await append(storage, writer, 1, 40);
    for (const [from, to] of [
      [1, 41],
      [1, 12],
      [7, 30],
      [20, 41],
      [39, 41],
    ] as const) {
      for (const log of ['a', 'b'] as const) {
        const { values } = await readLogRange(storage, 'r', { log, from, to, length: 0 });
        expect(texts(values), `${log} [${from}, ${to})`).toEqual(expected(from, to, log));
      }
    }
  });

  it('a writer seeded with the singles a restore read packs them with the next entries', async () => {
    await using storage = memoryStorage();
    const first = createLogWriter({ runId: 'r', redact: identity, segmentEntries: 4 });
    await append(storage, first, 1, 6); // a: 1 2 4 5 packed; b: 3 6 single
    const { singles } = await readLogRange(storage, 'r', { log: 'b', from: 1, to: 7, length: 2 });
    expect(singles.map((s) => s.n)).toEqual([3, 6]);
    const second = createLogWriter({ runId: 'r', redact: identity, segmentEntries: 4 });
    second.seed(new Map([['b', singles]]));
    await append(storage, second, 7, 6); // b gets 9 and 12: 3 6 9 12 -> packed
    expect(await keysOf(storage, 'logseg', 'r')).toContain(layout.logSegment('r', 'b', 12));
    expect(texts((await readLogRange(storage, 'r', { log: 'b', from: 1, to: 13, length: 4 })).values)).toEqual(['m3', 'm6', 'm9', 'm12']);
  });

  it('scrubs values when it packs them, with what the redactor knows then', async () => {
    await using storage = memoryStorage();
    let secret: string | undefined;
    const redact = <T>(v: T): T => (secret ? (JSON.parse(JSON.stringify(v).replaceAll(secret, '[redacted]')) as T) : v);
    const writer = createLogWriter({ runId: 'r', redact: redact as never, segmentEntries: 2 });
    await storage.write(writer.write([{ log: 'a', n: 1, value: { text: 'token=abc' } }]));
    secret = 'abc';
    await storage.write(writer.write([{ log: 'a', n: 2, value: { text: 'again abc' } }]));
    expect(texts((await readLogRange(storage, 'r', { log: 'a', from: 1, to: 3, length: 2 })).values)).toEqual(['token=[redacted]', 'again [redacted]']);
  });

  it('a fork gets the entries up to its point: whole segments copied, a straddling one unpacked', async () => {
    await using storage = memoryStorage();
    const writer = createLogWriter({ runId: 'r', redact: identity, segmentEntries: 4 });
    await append(storage, writer, 1, 30);
    await storage.write(await forkLogOps(storage, 'r', 'f', 17));
    for (const log of ['a', 'b'] as const) {
      expect(texts((await readLogRange(storage, 'f', { log, from: 1, to: 18, length: 0 })).values)).toEqual(expected(1, 18, log));
      expect(texts((await readLogRange(storage, 'f', { log, from: 1, to: 100, length: 0 })).values)).toEqual(expected(1, 18, log));
    }
  });

  it('a segment that is malformed is an error; a stray single copy of a packed entry is not read', async () => {
    await using storage = memoryStorage();
    const writer = createLogWriter({ runId: 'r', redact: identity, segmentEntries: 2 });
    await append(storage, writer, 1, 3); // a: 1 2 packed; b: 3
    const { encode } = await import('../core/codec.js');
    // Packing deletes the singles in the same batch, so only damage leaves one behind: the
    // segment's copy is the entry, and singles are read from after the last packed one.
    await storage.write([{ type: 'put', key: layout.log('r', 'a', 2), value: encode({ text: 'dup' }) }]);
    expect(texts((await readLogRange(storage, 'r', { log: 'a', from: 1, to: 4, length: 2 })).values)).toEqual(expected(1, 3, 'a'));
    await storage.write([{ type: 'put', key: layout.logSegment('r', 'a', 2), value: encode({ n: [1, 2], v: ['x'] }) }]);
    await expect(readLogRange(storage, 'r', { log: 'a', from: 1, to: 4, length: 2 })).rejects.toThrow(/malformed/);
  });
});

describe('a conversation longer than a segment', () => {
  const STEPS = 300;
  const note = tool({ name: 'note', description: 'Notes a number.', input: z.object({ i: z.number() }), effect: 'read', run: ({ i }) => ({ noted: i }) });
  const def = () => crew({ id: 'long-log', agents: [agent({ id: 'a', role: 'a', instructions: 'a', model: 'loop', tools: [note], maxSteps: STEPS + 5 })] });
  /** Calls `note` STEPS times, then answers; waits (until aborted) at turn `stopAt`. */
  const loop = (stopAt: number, reached: () => void = () => {}): ModelProvider => ({
    id: 'loop',
    async generate(request, { signal }) {
      const turn = request.messages.filter((m) => m.role === 'assistant').length;
      if (turn === stopAt) {
        reached();
        return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }));
      }
      const message = turn < STEPS ? { role: 'assistant' as const, content: `step ${turn}`, toolCalls: [{ id: `c${turn}`, name: 'note', args: { i: turn } }] } : { role: 'assistant' as const, content: `done after ${turn}` };
      return { message, usage: { inputTokens: 1, outputTokens: 1 } };
    },
  });
  const conversation = async (storage: Storage, runId: string, seq?: number) => {
    const store = createRunStore(storage);
    const checkpoint = seq === undefined ? await store.latestCheckpoint(runId) : await store.checkpoint(runId, seq);
    return (checkpoint!.snapshot as { children: { a: { snapshot: { context: { conversation: Array<{ role: string; content: string }> } } } } }).children.a.snapshot.context.conversation;
  };

  it('resumed after its first segment and packed again after the resume, it ends as an uninterrupted run, and forks from before the packing', async () => {
    await using whole = memoryStorage();
    {
      await using node = await createNode({ storage: whole, models: { loop: loop(-1) }, crews: [def()] });
      expect((await (await node.run(def(), { input: 'go', runId: 'r' })).result()).output).toBe(`done after ${STEPS}`);
    }
    await using storage = memoryStorage();
    let reached!: () => void;
    const stopped = new Promise<void>((resolve) => (reached = resolve));
    {
      const node = await createNode({ storage, models: { loop: loop(140, reached) }, crews: [def()] });
      await node.run(def(), { input: 'go', runId: 'r' });
      await stopped;
      await node.close();
    }
    expect(await keysOf(storage, 'logseg', 'r')).toHaveLength(1);
    {
      await using node = await createNode({ storage, models: { loop: loop(-1) }, crews: [def()] });
      expect((await node.get('r')!.result()).output).toBe(`done after ${STEPS}`);
      // The first checkpoint (before any packing) and the oldest one retention kept near the
      // end: each fork sees its point's entries, packed ones included.
      const kept = (await node.history('r')).map((h) => h.seq);
      for (const [at, runId] of [
        [kept[0]!, 'f'],
        [kept[1]!, 'g'],
      ] as const) {
        const forked = await node.fork('r', { at, runId, definition: def() });
        expect((await forked.result()).output).toBe(`done after ${STEPS}`);
      }
    }
    expect((await keysOf(storage, 'logseg', 'r')).length).toBeGreaterThanOrEqual(2);
    const resumed = await conversation(storage, 'r');
    expect(resumed.length).toBeGreaterThan(2 * STEPS);
    expect(resumed).toEqual(await conversation(whole, 'r'));
    expect(await conversation(storage, 'f')).toEqual(resumed);
    expect(await conversation(storage, 'g')).toEqual(resumed);
  }, 60_000);
});
