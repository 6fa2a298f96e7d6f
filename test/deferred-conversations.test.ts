import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, memoryStorage, scriptedModel, tool, type Message, type ModelProvider, type Script, type Storage } from '../index.js';
import { layout } from '../core/layout.js';
import { createRunStore } from '../core/run-store.js';
import { ErrorCode, TroupeError } from '../core/errors.js';
import type { KeyRange, StorageOp, WriteOptions } from '../core/storage.js';
import { levelStorage } from '../storage/level.js';
import { postgresStorage } from '../storage/postgres/index.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';
import { testDatabase } from './helpers/postgres.js';
import { tempDir } from './helpers/temp.js';

/** A fresh store of each kind a node runs on, removed when disposed. */
const backends: Array<[string, () => Promise<{ storage: Storage } & AsyncDisposable>]> = [
  [
    'LevelDB',
    async () => {
      const dir = await tempDir();
      const storage = await levelStorage({ path: dir.path });
      return { storage, [Symbol.asyncDispose]: async () => (await storage.close(), await dir[Symbol.asyncDispose]()) };
    },
  ],
  [
    'Postgres',
    async () => {
      const db = await testDatabase();
      const storage = await postgresStorage({ connectionString: db.url });
      return { storage, [Symbol.asyncDispose]: async () => (await storage.close(), await db[Symbol.asyncDispose]()) };
    },
  ],
];

/**
 * A resume leaves the agents' conversations in their logs: each is read back when its agent
 * gets work (an envelope, a model call, a tool call), so a resume reads none of them and a
 * crew reads only the ones of agents that work. Reads are counted through the storage.
 */

const LOOKUPS = 6;

/** A clerk that looks words up `LOOKUPS` times (a conversation long enough to be a log), then files, which needs a human. */
function clerkCrew(filed: string[] = []) {
  const lookup = tool({ name: 'lookup', description: 'Looks up.', input: z.object({ word: z.string() }), effect: 'read', run: ({ word }) => `${word}: found` });
  const file = tool({
    name: 'file',
    description: 'Files.',
    input: z.object({ what: z.string() }),
    effect: 'irreversible',
    approval: 'ask',
    run: ({ what }) => (filed.push(what), 'filed'),
  });
  return crew({ id: 'desk', supervision: { maxRestarts: 0 }, agents: [agent({ id: 'clerk', role: 'files', instructions: 'File.', model: 'scripted', tools: [lookup, file] })] });
}

const clerkScript: Script = {
  clerk: [
    ...Array.from({ length: LOOKUPS }, (_, i) => ({ text: `looking up w${i}`, toolCalls: [{ name: 'lookup', args: { word: `w${i}` } }] })),
    { text: 'filing', toolCalls: [{ name: 'file', args: { what: 'the report' } }] },
    'done: filed the report',
  ],
};

/** {@link pairScript} with a researcher that looks `LOOKUPS` words up: a conversation long enough to be a log. */
const pairLongScript: Script = {
  ...pairScript,
  researcher: [...Array.from({ length: LOOKUPS }, (_, i) => ({ text: `looking up w${i}`, toolCalls: [{ name: 'lookup', args: { word: `w${i}` } }] })), 'findings: many'],
};

/**
 * `inner`, except that the calls `hangs` picks never answer (until aborted, when the node
 * closes); `reached` resolves at the first of them.
 */
function hangingAt(inner: ModelProvider, hangs: (req: { agent: string; step: number }) => boolean) {
  let reach!: () => void;
  const reached = new Promise<void>((resolve) => (reach = resolve));
  const provider: ModelProvider = {
    id: inner.id,
    generate: (req, ctx) => {
      if (!hangs(req)) return inner.generate(req, ctx);
      reach();
      return new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true }));
    },
  };
  return { provider, reached };
}

/** Runs {@link twoAgentCrew} on {@link pairLongScript} as `runId` until a call `hangs` picks is in flight, then closes its node. */
async function runUntilHanging(storage: Storage, runId: string, hangs: (req: { agent: string; step: number }) => boolean): Promise<void> {
  const hanging = hangingAt(scriptedModel({ script: pairLongScript }), hangs);
  await using node = await createNode({ storage, models: { scripted: hanging.provider } });
  await node.run(twoAgentCrew(), { input: 'brief me', runId });
  await hanging.reached;
}

/** `disk` with its `entries` (and `write`) replaced; everything else goes to `disk` itself. */
function intercepted(disk: Storage, over: Partial<Pick<Storage, 'entries' | 'write'>>): Storage {
  return new Proxy(disk, {
    get(target, prop, receiver) {
      if (prop === 'entries' && over.entries) return over.entries;
      if (prop === 'write' && over.write) return over.write;
      const value = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** `disk` with the reads of conversation logs counted, by log, and the keys it was given to write. */
function countingLogReads(disk: Storage, runId: string) {
  const singles = layout.logs(runId).gte!;
  const segments = layout.logSegments(runId).gte!;
  const reads: string[] = [];
  const written: string[][] = [];
  const storage = intercepted(disk, {
    write: (ops: readonly StorageOp[], options?: WriteOptions) => (written.push(ops.map((op) => op.key)), disk.write(ops, options)),
    entries: (range: KeyRange) => {
      const from = range.gte ?? '';
      if (from.startsWith(singles) || from.startsWith(segments)) reads.push(from);
      return disk.entries(range);
    },
  });
  return { storage, reads, written };
}

/** The conversation of `agentId` in a run's newest checkpoint, rebuilt whole from storage. */
async function conversationOf(storage: Storage, runId: string, agentId: string): Promise<Message[]> {
  const checkpoint = await createRunStore(storage).latestCheckpoint(runId);
  return (checkpoint?.snapshot as { children: Record<string, { snapshot: { context: { conversation: Message[] } } }> }).children[agentId]!.snapshot.context.conversation;
}

/** Wraps a provider to keep the messages of every request that reaches it. */
function recording(provider: ModelProvider) {
  const requests: Array<{ call: string; messages: Message[] }> = [];
  const wrapped: ModelProvider = { id: provider.id, generate: (req, ctx) => (requests.push({ call: `${req.agent}#${req.step}`, messages: structuredClone([...req.messages]) }), provider.generate(req, ctx)) };
  return { wrapped, requests };
}

const approvalAsked = (node: { subscribe(fn: (e: { type: string; approvalId?: string }) => void): () => void }) =>
  new Promise<string>((resolve) => node.subscribe((e) => e.type === 'approval.requested' && resolve(e.approvalId!)));

/** Runs the clerk's crew as `runId` on `storage` until it asks for approval, then closes its node: the approval's id. */
async function untilApproval(storage: Storage, runId: string): Promise<string> {
  await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: clerkScript }) } });
  const asked = approvalAsked(node);
  await node.run(clerkCrew(), { input: 'file it', runId });
  return await asked;
}

describe.each(backends)('deferred conversations (%s)', (_name, open) => {
  it('a run resumed while it waits for approval reads none of its conversation until the decision, then finishes with all of it', async () => {
    // The same run without a restart: what the conversation must be in the end.
    let reference: Message[];
    {
      await using storage = memoryStorage();
      await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: clerkScript }) } });
      const asked = approvalAsked(node);
      const run = await node.run(clerkCrew(), { input: 'file it', runId: 'desk-1' });
      await node.approve(await asked);
      expect((await run.result()).output).toBe('done: filed the report');
      reference = await conversationOf(storage, 'desk-1', 'clerk');
    }
    expect(reference.length).toBeGreaterThan(2 * LOOKUPS);

    await using db = await open();
    const disk = db.storage;
    const approvalId = await untilApproval(disk, 'desk-1');
    const { storage, reads } = countingLogReads(disk, 'desk-1');
    const filed: string[] = [];
    await using node = await createNode({ storage, resume: false, models: { scripted: scriptedModel({ script: clerkScript }) }, crews: [clerkCrew(filed)] });
    const run = await node.resume('desk-1');
    expect(run.status).toBe('running');
    expect(reads).toEqual([]);

    await node.approve(approvalId);
    expect((await run.result()).output).toBe('done: filed the report');
    expect(filed).toEqual(['the report']);
    expect(reads.length).toBeGreaterThan(0);
    // Read back whole: the model saw it, and the run wrote it on from there.
    expect(await conversationOf(disk, 'desk-1', 'clerk')).toEqual(reference);
  });

  it('a run resumed during a model call sends the model the whole conversation, as the uninterrupted run did', async () => {
    const reference = recording(scriptedModel({ script: pairLongScript }));
    {
      await using storage = memoryStorage();
      await using node = await createNode({ storage, models: { scripted: reference.wrapped } });
      await (await node.run(twoAgentCrew(), { input: 'brief me', runId: 'mid-1' })).result();
    }

    await using db = await open();
    const disk = db.storage;
    // The researcher's step before its findings never answers: the node closes while it is in flight.
    await runUntilHanging(disk, 'mid-1', (req) => req.agent === 'researcher' && req.step === LOOKUPS);
    const resumed = recording(scriptedModel({ script: pairLongScript }));
    await using node = await createNode({ storage: disk, models: { scripted: resumed.wrapped }, crews: [twoAgentCrew()] });
    const result = await node.get('mid-1')!.result();
    expect(result.output).toBe('final: a brief about actor and state');
    // Every request after the resume equals the uninterrupted run's request for that call.
    const byCall = new Map(reference.requests.map((r) => [r.call, r.messages]));
    expect(resumed.requests.length).toBeGreaterThan(0);
    expect(resumed.requests[0]!.messages.length).toBeGreaterThanOrEqual(8);
    for (const request of resumed.requests) expect(request.messages).toEqual(byCall.get(request.call));
  });

  it('resuming a crew reads only the conversation of the agent that works: a finished agent’s log is never read', async () => {
    await using db = await open();
    const disk = db.storage;
    // The writer's call never answers: the researcher is done, the writer works.
    await runUntilHanging(disk, 'crew-1', (req) => req.agent === 'writer');
    const researcherBefore = await conversationOf(disk, 'crew-1', 'researcher');
    expect(researcherBefore.length).toBeGreaterThanOrEqual(8);
    const { storage, reads, written } = countingLogReads(disk, 'crew-1');
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairLongScript }) }, crews: [twoAgentCrew()] });
    expect((await node.get('crew-1')!.result()).output).toBe('final: a brief about actor and state');
    expect(reads.filter((from) => from.includes('researcher'))).toEqual([]);
    // Nor is its record written again by the resume: its first checkpoint holds what changed,
    // not every actor (the researcher is written once more only when the finished crew stops it).
    const first = written.find((keys) => keys.some((key) => key.startsWith(layout.checkpoints('crew-1').gte!)))!;
    expect(first.filter((key) => key.startsWith(layout.actorRecords('crew-1', 'researcher').gte!))).toEqual([]);
    expect(first.filter((key) => key.startsWith(layout.actorRecords('crew-1', 'crew').gte!))).toEqual([]);
    // Left unread is not left out: the researcher's conversation is all there, unchanged.
    expect(await conversationOf(disk, 'crew-1', 'researcher')).toEqual(researcherBefore);
  });

  it('a node closed while a conversation is being read back leaves the run stopped, not failed, and resumable', async () => {
    await using db = await open();
    const disk = db.storage;
    await runUntilHanging(disk, 'cut-1', (req) => req.agent === 'researcher' && req.step === LOOKUPS);
    // The restored call's read of the conversation is held, then fails as a closed storage would.
    let reading!: () => void;
    const held = new Promise<void>((resolve) => (reading = resolve));
    let cut!: (error: Error) => void;
    const cutOff = new Promise<never>((_, reject) => (cut = reject));
    cutOff.catch(() => {});
    const gated = intercepted(disk, {
      entries: (range: KeyRange) => {
        if (!(range.gte ?? '').includes(':cut-1:researcher.')) return disk.entries(range);
        reading();
        return (async function* () {
          await cutOff;
          yield* disk.entries(range);
        })();
      },
    });
    let settled = false;
    {
      await using node = await createNode({ storage: gated, models: { scripted: scriptedModel({ script: pairLongScript }) }, crews: [twoAgentCrew()] });
      const run = node.get('cut-1')!;
      void run.settled().then(() => (settled = true));
      await held;
      await node.close();
      cut(new Error('storage closed'));
      // Every continuation of the failed read runs before a macrotask: flushed, not waited for.
      await new Promise((resolve) => setImmediate(resolve));
      expect(run.status).toBe('stopped');
    }
    expect(settled).toBe(false);
    expect((await createRunStore(disk).requireRun('cut-1')).status).toBe('running');
    await using node = await createNode({ storage: disk, models: { scripted: scriptedModel({ script: pairLongScript }) }, crews: [twoAgentCrew()] });
    expect((await node.get('cut-1')!.result()).output).toBe('final: a brief about actor and state');
  });

  it('a conversation read that fails with an I/O error stops the run with STORAGE_FAILED naming the read, and a later node completes it', async () => {
    await using db = await open();
    const disk = db.storage;
    await runUntilHanging(disk, 'eio-1', (req) => req.agent === 'researcher' && req.step === LOOKUPS);
    const failing = intercepted(disk, {
      entries: (range: KeyRange) => {
        if (!(range.gte ?? '').includes(':eio-1:researcher.')) return disk.entries(range);
        return (async function* () {
          yield* [] as Array<[string, Uint8Array]>;
          // As a storage reports its own failures (storage/level.ts): not damage, a failed read.
          throw new TroupeError(ErrorCode.STORAGE_FAILED, 'EIO: i/o error reading a table file');
        })();
      },
    });
    {
      await using node = await createNode({ storage: failing, models: { scripted: scriptedModel({ script: pairLongScript }) }, crews: [twoAgentCrew()] });
      const failed = await node.get('eio-1')!.result().then(
        () => undefined,
        (error: { details?: { error?: { code?: string; message?: string } } }) => error.details?.error,
      );
      expect(failed?.code).toBe('STORAGE_FAILED');
      expect(failed?.message).toMatch(/^reading the conversation of "researcher" failed, run stopped: EIO/);
    }
    expect((await createRunStore(disk).requireRun('eio-1')).status).toBe('running');
    await using node = await createNode({ storage: disk, models: { scripted: scriptedModel({ script: pairLongScript }) }, crews: [twoAgentCrew()] });
    expect((await node.get('eio-1')!.result()).output).toBe('final: a brief about actor and state');
  });

  it('a conversation log damaged after the checkpoint stops the run with STORAGE_CORRUPT when its agent gets work, and the run stays resumable as it was', async () => {
    await using db = await open();
    const disk = db.storage;
    const approvalId = await untilApproval(disk, 'desk-2');
    // One entry of the clerk's log goes missing.
    const [key] = await (async () => {
      const found: string[] = [];
      for await (const [k] of disk.entries(layout.logs('desk-2'))) found.push(k);
      return found;
    })();
    expect(key).toBeDefined();
    await disk.write([{ type: 'del', key: key! }]);

    const logsOf = async () => {
      const found: Array<[string, string]> = [];
      for (const range of [layout.logs('desk-2'), layout.logSegments('desk-2')]) for await (const [k, v] of disk.entries(range)) found.push([k, Buffer.from(v).toString('hex')]);
      return found;
    };
    const damaged = await logsOf();

    const filed: string[] = [];
    const corrupt = { details: { error: { code: 'STORAGE_CORRUPT' } } };
    {
      await using node = await createNode({ storage: disk, resume: false, models: { scripted: scriptedModel({ script: clerkScript }) }, crews: [clerkCrew(filed)] });
      const run = await node.resume('desk-2');
      await node.approve(approvalId);
      await expect(run.result()).rejects.toMatchObject(corrupt);
    }
    // Nothing ran, the damaged log is as it was, and the run is not marked failed: it is reported again on every start.
    expect(filed).toEqual([]);
    expect(await logsOf()).toEqual(damaged);
    expect((await createRunStore(disk).requireRun('desk-2')).status).not.toBe('failed');
    await using node = await createNode({ storage: disk, models: { scripted: scriptedModel({ script: clerkScript }) }, crews: [clerkCrew(filed)] });
    await expect(node.get('desk-2')!.result()).rejects.toMatchObject(corrupt);
    expect(filed).toEqual([]);
  });
});
