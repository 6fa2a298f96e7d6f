import { describe, expect, it } from 'vitest';
import { createNode, isTroupeError, scriptedModel, type ModelProvider, type RunEvent, type Storage, type StorageOp, type TroupeError, type TroupeNode, type WriteOptions } from '../index.js';
import { createRunStore } from '../core/run-store.js';
import { createWriteQueue } from '../core/write-queue.js';
import { prefixRange } from '../core/storage.js';
import { levelStorage } from '../storage/level.js';
import { memoryStorage } from '../storage/memory.js';
import { failure } from './helpers/failure.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';
import { tempDir } from './helpers/temp.js';

/**
 * The scripted model behind a gate: each call waits for a permit, so a test decides how far
 * a run gets. `waiting()` resolves once a call is parked at the gate.
 */
function gatedModel() {
  const inner = scriptedModel({ script: pairScript });
  let permits = 0;
  const parked: Array<() => void> = [];
  let onPark: (() => void) | undefined;
  const calls: string[] = [];
  const provider: ModelProvider = {
    id: 'scripted',
    async generate(request, context) {
      await new Promise<void>((resolve, reject) => {
        if (permits > 0) {
          permits -= 1;
          return resolve();
        }
        parked.push(resolve);
        context.signal.addEventListener('abort', () => reject(context.signal.reason), { once: true });
        onPark?.();
      });
      calls.push(`${request.agent}#${request.step}`);
      return inner.generate(request, context);
    },
  };
  return {
    provider,
    calls,
    /** Lets `n` calls through (parked ones first). */
    allow(n = 1) {
      permits += n;
      while (permits > 0 && parked.length > 0) {
        permits -= 1;
        parked.shift()!();
      }
    },
    waiting: () => new Promise<void>((resolve) => (parked.length > 0 ? resolve() : (onPark = resolve))),
  };
}

/** Resolves at the first event of `node` that `match` accepts (subscribe before causing it). */
const nextEvent = (node: TroupeNode, match: (e: RunEvent) => boolean) =>
  new Promise<void>((resolve) => {
    const off = node.subscribe((e) => {
      if (match(e)) {
        off();
        resolve();
      }
    });
  });

/** An unfinished run `r` on `storage`: started, checkpointed, its node closed before any model answer. */
async function unfinishedRun(storage: Storage, tools: string[]) {
  const gate = gatedModel();
  await using node = await createNode({ storage, models: { scripted: gate.provider } });
  await node.run(twoAgentCrew({ calls: tools }), { input: 'brief me', runId: 'r' });
  await gate.waiting();
}

describe('one node per run', () => {
  it('two nodes on one storage: exactly one resumes an unfinished run, each tool runs once, the other gets RUN_CLAIMED until the first closes', async () => {
    await using dir = await tempDir();
    await using storage = await levelStorage({ path: dir.path });
    const tools: string[] = [];
    await unfinishedRun(storage, tools);
    const definition = twoAgentCrew({ calls: tools });

    const gateA = gatedModel();
    await using a = await createNode({ storage, crews: [definition], models: { scripted: gateA.provider } });
    const gateB = gatedModel();
    await using b = await createNode({ storage, crews: [definition], models: { scripted: gateB.provider } });
    expect(a.get('r')).toBeDefined();
    expect(b.get('r')).toBeUndefined();

    // A gets as far as the first lookup, then waits for its second model answer.
    const looked = nextEvent(a, (e) => e.type === 'tool.call');
    gateA.allow(1);
    await looked;
    await gateA.waiting();
    expect(tools).toEqual(['actor']);

    const refused = await failure(b.resume('r'));
    expect(refused.code).toBe('RUN_CLAIMED');
    expect(refused.message).toContain(`run "r" is being executed by owner "${a.owner}"`);
    const skipped: string[] = [];
    expect(await b.resumeAll({ onSkipped: (s) => skipped.push(`${s.runId} held by ${s.holder}`) })).toEqual([]);
    expect(skipped).toEqual([`r held by ${a.owner}`]);
    expect(gateB.calls).toEqual([]);

    // Closed, A checkpoints and lets go: now B may resume it, from A's last checkpoint.
    await a.close();
    const run = await b.resume('r');
    gateB.allow(Infinity);
    expect((await run.result()).output).toBe('final: a brief about actor and state');
    expect(tools).toEqual(['actor', 'state']);
    expect(gateB.calls).toEqual(['researcher#2', 'researcher#3', 'writer#1']);
    // Epochs: 1 for the node that started it, 2 for A, 3 for B, written with the record.
    expect(await createRunStore(storage).requireRun('r')).toMatchObject({ status: 'completed', owner: b.owner, epoch: 3 });
  });

  it('starts a new run id on only one of two nodes sharing a storage', async () => {
    await using storage = memoryStorage();
    const gate = gatedModel();
    await using a = await createNode({ storage, models: { scripted: gate.provider } });
    await using b = await createNode({ storage, models: { scripted: gate.provider } });
    const started = await Promise.allSettled([a.run(twoAgentCrew(), { input: 'x', runId: 'n' }), b.run(twoAgentCrew(), { input: 'x', runId: 'n' })]);
    expect(started.map((s) => s.status).sort()).toEqual(['fulfilled', 'rejected']);
    const rejected = started.find((s): s is PromiseRejectedResult => s.status === 'rejected')!;
    expect(isTroupeError(rejected.reason, 'RUN_CLAIMED')).toBe(true);
  });

  it('a node whose claim was taken over gets LEASE_LOST on its next write and stops that run without writing', async () => {
    await using dir = await tempDir();
    const inner = await levelStorage({ path: dir.path });
    // Counts every batch reaching the storage, and which of them it accepted.
    const writes: Array<{ keys: string[]; fenced: boolean; ok: boolean; code?: string }> = [];
    const storage: Storage = Object.create(inner) as Storage;
    Object.defineProperty(storage, 'write', {
      value: async (ops: readonly StorageOp[], options?: WriteOptions) => {
        const entry: (typeof writes)[number] = { keys: ops.map((op) => op.key), fenced: (options?.fence?.length ?? 0) > 0, ok: false };
        writes.push(entry);
        try {
          await inner.write(ops, options);
          entry.ok = true;
        } catch (error) {
          entry.code = (error as TroupeError).code;
          throw error;
        }
      },
    });
    await using _ = inner;
    const tools: string[] = [];
    const gate = gatedModel();
    await using node = await createNode({ storage, models: { scripted: gate.provider } });
    const checkpointed = nextEvent(node, (e) => e.type === 'checkpoint');
    const run = await node.run(twoAgentCrew({ calls: tools }), { input: 'brief me', runId: 'r' });
    await gate.waiting();
    await checkpointed;

    // Another owner takes the run over at the storage: the node's claim stops being current.
    const record = await createRunStore(storage).requireRun('r');
    expect(record).toMatchObject({ owner: node.owner, epoch: 1 });
    await storage.release({ runId: 'r', owner: node.owner, epoch: record.epoch! });
    const intruder = await storage.claim('r', 'intruder');
    expect(intruder.epoch).toBe(2);
    const snapshot = async () => {
      const out: Record<string, string> = {};
      for (const prefix of ['run:r', 'ckpt:r:', 'jrnl:r:', 'ledger:r:', 'mbox:r:', 'audit:']) {
        for await (const [key, value] of storage.entries(prefixRange(prefix))) out[key] = Buffer.from(value).toString('hex');
      }
      return out;
    };
    const before = await snapshot();
    const writesBefore = writes.length;

    // The model answers: its answer (and the lookup's intent) would be the next batch.
    gate.allow(Infinity);
    const result = await run.settled();
    expect(result).toMatchObject({ status: 'failed', error: { code: 'LEASE_LOST' } });
    expect(result.error!.message).toMatch(/lost the claim on run "r" \(owner ".*", epoch 1; owner "intruder" holds it at epoch 2\)/);
    await node.close();

    const after = writes.slice(writesBefore);
    expect(after.length).toBeGreaterThan(0);
    expect(after.every((w) => w.fenced && !w.ok && w.code === 'LEASE_LOST')).toBe(true);
    expect(await snapshot()).toEqual(before);
    // The intent never became durable, so the tool never ran.
    expect(tools).toEqual([]);
    // Releasing its stale claim on close did not free the run from the new holder.
    expect((await failure(storage.claim('r', 'someone'))).message).toContain('owner "intruder"');
  });
});

describe('the write queue', () => {
  it("fails only the batch whose fence is lost, not the other runs' batches merged with it", async () => {
    const inner = memoryStorage();
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const calls: string[][] = [];
    const storage: Storage = Object.create(inner) as Storage;
    Object.defineProperty(storage, 'write', {
      value: async (ops: readonly StorageOp[], options?: WriteOptions) => {
        calls.push(ops.map((op) => op.key));
        // The first write stays in flight until the test opens the gate, so the next two merge.
        if (calls.length === 1) await gate;
        return inner.write(ops, options);
      },
    });
    const put = (key: string): StorageOp => ({ type: 'put', key, value: new Uint8Array([1]) });
    const claimA = await storage.claim('a', 'node-1');
    const claimB = await storage.claim('b', 'node-1');
    const queue = createWriteQueue(storage, { sync: false });

    const first = queue.write([put('first')]);
    const a = failure(queue.write([put('a:1')], claimA));
    const b = queue.write([put('b:1')], claimB);
    await storage.release(claimA);
    await storage.claim('a', 'node-2');
    open();

    await first;
    expect((await a).code).toBe('LEASE_LOST');
    await expect(b).resolves.toBeUndefined();
    expect(calls).toEqual([['first'], ['a:1', 'b:1'], ['b:1']]);
    expect(await storage.get('a:1')).toBeUndefined();
    expect(await storage.get('b:1')).toBeDefined();
  });
});
