import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, memoryStorage, scriptedModel, tool, type RunEvent, type Script } from '../index.js';
import { manualClock } from '../core/clock.js';
import { levelStorage } from '../storage/level.js';
import { tempDir } from './helpers/temp.js';
import { wrapStorage } from './helpers/wrap-storage.js';
import desk, { deskModels } from './fixtures/mail-crew.js';
import { createRunStore } from '../core/run-store.js';
import type { KeyRange, Storage, StorageOp } from '../core/storage.js';
import { decode, encode } from '../core/codec.js';

const IDLE = 10_000;
const pay = tool({ name: 'pay', description: 'Pays.', input: z.object({ amount: z.number() }), effect: 'irreversible', scopes: ['money'], run: ({ amount }) => `paid ${amount}` });
const script = { cashier: [{ toolCalls: [{ name: 'pay', args: { amount: 5 } }] }, 'all paid'] };
const team = () => crew({ id: 'shop', agents: [agent({ id: 'cashier', role: 'c', instructions: 'Pay.', model: 'scripted', tools: [pay], policy: { ask: ['money'] } })] });
/** Runs the shop crew on `storage` until it asks for approval, then closes its node: the approval's id. */
async function untilApproval(storage: Storage, runId: string): Promise<string> {
  await using node = await createNode({ storage, models: { scripted: scriptedModel({ script }) } });
  const approval = asked(node);
  await node.run(team(), { input: 'go', runId });
  // Awaited inside: the node must still be open when the approval is asked for.
  return await approval;
}
const asked = (node: { subscribe(l: (e: RunEvent) => void): () => void }) =>
  new Promise<string>((resolve) => node.subscribe((e) => e.type === 'approval.requested' && resolve(e.approvalId)));

/** `disk` with a count of the scans over every approval of the database. */
const counting = (disk: ReturnType<typeof memoryStorage>) => {
  const scans = { all: 0 };
  const storage = new Proxy(disk, {
    get(target, prop, receiver) {
      if (prop === 'entries') return (range: KeyRange) => (range.gte === 'approval:' && scans.all++, target.entries(range));
      const value = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { storage, scans };
};

describe('passivation', () => {
  it('unloads a run waiting for a human after the idle period, keeps its handle, and loads it again for the decision', async () => {
    const clock = manualClock(0);
    await using storage = memoryStorage();
    await using node = await createNode({ storage, clock, passivateAfterMs: IDLE, models: { scripted: scriptedModel({ script }) } });
    const approval = asked(node);
    const run = await node.run(team(), { input: 'go', runId: 'p1' });
    const id = await approval;
    expect(node.loadedRuns()).toEqual(['p1']);
    clock.advance(IDLE - 1);
    expect(node.loadedRuns()).toEqual(['p1']);
    clock.advance(1);
    await expect.poll(() => node.loadedRuns()).toEqual([]);
    // Unloaded, not gone: the handle still answers, and says what the run waits for.
    expect(run.status).toBe('running');
    expect(run.waiting().map((a) => a.id)).toEqual([id]);
    await node.approve(id);
    expect(node.loadedRuns()).toEqual(['p1']);
    // The handle taken before the run was unloaded sees it finish.
    expect((await run.result()).output).toBe('all paid');
  });

  it('registers a waiting run found at start without loading it, and a decision after the restart completes it', async () => {
    await using dir = await tempDir();
    let id: string;
    {
      await using storage = await levelStorage({ path: dir.path });
      id = await untilApproval(storage, 'p2');
    }
    await using storage = await levelStorage({ path: dir.path });
    await using node = await createNode({ storage, crews: [team()], models: { scripted: scriptedModel({ script }) } });
    expect(node.loadedRuns()).toEqual([]);
    const run = node.get('p2')!;
    expect(run.waiting().map((a) => a.id)).toEqual([id]);
    await node.approve(id);
    expect((await run.result()).output).toBe('all paid');
  });

  it('unloads a run waiting on a long backoff and wakes it at the deadline', async () => {
    const clock = manualClock(0);
    await using storage = memoryStorage();
    const slow = { a: [{ text: 'done', failFirst: 1 }] };
    await using node = await createNode({ storage, clock, passivateAfterMs: IDLE, models: { scripted: scriptedModel({ script: slow }) } });
    // Quiet once the checkpoint after it entered `recovering` is written.
    let backingOff = false;
    const recovering = new Promise<void>((resolve) =>
      node.subscribe((e) => {
        if (e.type === 'state' && e.state === 'recovering') backingOff = true;
        else if (e.type === 'checkpoint' && backingOff) resolve();
      }),
    );
    const def = crew({ id: 'wait', agents: [agent({ id: 'a', role: 'a', instructions: 'a', model: 'scripted', retry: { initialDelayMs: 60_000, maxDelayMs: 60_000, jitter: 0 } })] });
    const run = await node.run(def, { input: 'go', runId: 'p3' });
    await recovering;
    const unloaded = new Promise<RunEvent>((resolve) => run.subscribe((e) => e.type === 'run.unloaded' && resolve(e)));
    const loaded = new Promise<void>((resolve) => run.subscribe((e) => e.type === 'run.loaded' && resolve()));
    // The idle timer is armed again by each checkpoint: step the clock until it finds the run quiet.
    let gone = false;
    void unloaded.then(() => (gone = true));
    for (let i = 0; i < 3 && !gone; i++) {
      clock.advance(IDLE);
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    expect(await unloaded).toMatchObject({ type: 'run.unloaded', wakeAt: 60_000 });
    expect(node.loadedRuns()).toEqual([]);
    clock.advance(60_000 - clock.now());
    await loaded;
    // Restored at its deadline, the backoff fires with what is left of it: nothing.
    clock.advance(0);
    expect((await run.result()).output).toBe('done');
  });

  it('loads an unloaded run again for an envelope sent to it', async () => {
    const clock = manualClock(0);
    await using storage = memoryStorage();
    await using node = await createNode({ storage, clock, passivateAfterMs: IDLE, models: { scripted: scriptedModel({ script }) } });
    const approval = asked(node);
    await node.run(team(), { input: 'go', runId: 'p4' });
    await approval;
    clock.advance(IDLE);
    await expect.poll(() => node.loadedRuns()).toEqual([]);
    await node.tell('p4/cashier', 'note', { text: 'hello' });
    expect(node.loadedRuns()).toEqual(['p4']);
  });

  it("records a run as waiting only when nothing but a human can move it: one whose other agent was working when the process died is loaded again at start, and that agent finishes", async () => {
    const disk = memoryStorage();
    {
      await using node = await createNode({ storage: disk, models: deskModels() });
      const waiting = new Promise<void>((resolve) => node.subscribe((e) => e.type === 'approval.requested' && resolve()));
      await node.run(desk, { input: 'q', runId: 'w1' });
      await waiting;
    }
    expect((await createRunStore(disk).getRun('w1'))?.status).toBe('waiting');
    // The clerk takes a second task while the keeper waits for its human; the process dies
    // before the clerk's answer is written.
    let dead = false;
    const dying = wrapStorage(disk, (ops, _options, next) => {
      if (ops.some((op) => op.key.startsWith('ledger:w1:clerk/t2'))) dead = true;
      return dead ? Promise.reject(new Error('the process died')) : next();
    });
    {
      const node = await createNode({ storage: dying, models: deskModels(), crews: [desk] });
      await node.tell('w1/clerk', 'task', { content: 'again' });
      await expect.poll(() => dead).toBe(true);
      await node.close().catch(() => {});
    }
    expect((await createRunStore(disk).getRun('w1'))?.status).toBe('running');
    await using node = await createNode({ storage: disk, models: deskModels(), crews: [desk] });
    await expect
      .poll(async () => (await createRunStore(disk).journal('w1')).some((e) => e.kind === 'model.call' && e.data.callId === 'clerk/t2/s1/model'))
      .toBe(true);
    // Back to waiting once the clerk is done: the keeper's approval is all that is left.
    await expect.poll(async () => (await createRunStore(disk).getRun('w1'))?.status).toBe('waiting');
    expect(node.status).toBe('running');
  });

  it('records a run whose other agent waits on a backoff beside a pending approval as running: loaded at start, the backoff is woken at its deadline', async () => {
    const clock = manualClock(0);
    const disk = memoryStorage();
    // The clerk's second task fails once, retryably: it backs off 60 s while the keeper waits for its human.
    const script: Script = (request) => {
      if (request.agent === 'clerk') return request.priorTurns ? { text: 'second answer', failFirst: 1 } : 'first answer';
      return request.messages.some((m) => m.role === 'tool') ? 'filed' : { toolCalls: [{ name: 'file', args: { answer: 'x' } }] };
    };
    const file = tool({ name: 'file', description: 'Files.', input: z.object({ answer: z.string() }), effect: 'irreversible', approval: 'ask', run: () => 'filed' });
    const desk2 = crew({
      id: 'desk2',
      agents: [
        agent({ id: 'clerk', role: 'c', instructions: 'Answer.', model: 'scripted', retry: { initialDelayMs: 60_000, maxDelayMs: 60_000, jitter: 0 } }),
        agent({ id: 'keeper', role: 'k', instructions: 'File.', model: 'scripted', tools: [file] }),
      ],
    });
    const models = { scripted: scriptedModel({ script }) };
    {
      await using node = await createNode({ storage: disk, clock, passivateAfterMs: IDLE, models });
      const approval = asked(node);
      await node.run(desk2, { input: 'q', runId: 'b1' });
      await approval;
      const recovering = new Promise<void>((resolve) => node.subscribe((e) => e.type === 'state' && e.actor === 'clerk' && e.state === 'recovering' && resolve()));
      await node.tell('b1/clerk', 'task', { content: 'again' });
      await recovering;
      await expect.poll(async () => (await createRunStore(disk).getRun('b1'))?.status).toBe('running');
    }
    await using node = await createNode({ storage: disk, clock, passivateAfterMs: IDLE, models, crews: [desk2] });
    expect(node.loadedRuns()).toEqual(['b1']);
    // The run may be unloaded while it backs off and woken at the deadline: step the clock until the retry is made.
    await expect
      .poll(async () => {
        clock.advance(IDLE);
        await new Promise<void>((resolve) => setImmediate(resolve));
        return (await createRunStore(disk).journal('b1')).some((e) => e.kind === 'model.call' && e.data.callId === 'clerk/t2/s1/model');
      })
      .toBe(true);
  });

  it.each([
    ['registered unloaded', 60_000],
    ['loaded', 0],
  ])('reads the approvals once when it starts with many runs waiting for a human (%s), not once a run', async (_how, passivateAfterMs) => {
    const disk = memoryStorage();
    const models = { scripted: scriptedModel({ script }) };
    {
      await using node = await createNode({ storage: disk, models });
      for (let i = 0; i < 20; i++) {
        const approval = asked(node);
        await node.run(team(), { input: 'go', runId: `many-${i}` });
        await approval;
      }
    }
    const { storage: counted, scans } = counting(disk);
    await using node = await createNode({ storage: counted, models, crews: [team()], passivateAfterMs });
    expect(node.loadedRuns()).toHaveLength(passivateAfterMs === 0 ? 20 : 0);
    expect((await node.approvals({ status: 'pending' })).length).toBe(20);
    // One scan at start, one for the approvals() call above.
    expect(scans.all).toBe(2);
  });
});

describe("a run's approvals are read through its index", () => {
  it('loads a passivated run for its decision without reading the approvals of other runs', async () => {
    const clock = manualClock(0);
    const { storage, scans } = counting(memoryStorage());
    await using node = await createNode({ storage, clock, passivateAfterMs: IDLE, models: { scripted: scriptedModel({ script }) } });
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const approval = asked(node);
      await node.run(team(), { input: 'go', runId: `idx-${i}` });
      ids.push(await approval);
    }
    clock.advance(IDLE);
    await expect.poll(() => node.loadedRuns()).toEqual([]);
    const before = scans.all;
    await node.approve(ids[3]!);
    expect(node.loadedRuns()).toEqual(['idx-3']);
    expect((await node.get('idx-3')!.result()).output).toBe('all paid');
    expect(scans.all).toBe(before);
    const index: string[] = [];
    for await (const [key] of storage.entries({ gte: 'apprun:idx-3:', lt: 'apprun:idx-3:\uffff' })) index.push(key);
    expect(index).toEqual([`apprun:idx-3:${ids[3]}`]);
  });

  it('finds the approvals of a run checkpointed before the index existed, indexes them, and completes it after a restart', async () => {
    await using dir = await tempDir();
    let id: string;
    {
      await using storage = await levelStorage({ path: dir.path });
      id = await untilApproval(storage, 'old-1');
      // What an older Troupe left: no index, and manifests that do not claim one.
      const ops: StorageOp[] = [];
      for await (const [key] of storage.entries({ gte: 'apprun:', lt: 'apprun:\uffff' })) ops.push({ type: 'del', key });
      for await (const [key, raw] of storage.entries({ gte: 'ckpt:old-1:', lt: 'ckpt:old-1:\uffff' })) {
        const { approvalIndex: _, ...manifest } = decode(raw, Infinity) as Record<string, unknown>;
        ops.push({ type: 'put', key, value: encode(manifest) });
      }
      expect(ops.filter((op) => op.key.startsWith('apprun:'))).toHaveLength(1);
      await storage.write(ops, { sync: true });
    }
    {
      // Loaded only after start (not with the approvals a start reads for all its runs).
      await using storage = await levelStorage({ path: dir.path });
      await using node = await createNode({ storage, resume: false, crews: [team()], models: { scripted: scriptedModel({ script }) } });
      const run = await node.resume('old-1');
      expect(run.waiting().map((a) => a.id)).toEqual([id]);
      await expect.poll(async () => (await storage.get(`apprun:old-1:${id}`)) !== undefined).toBe(true);
      const newest = await createRunStore(storage).latestCheckpoint('old-1');
      expect(newest?.approvalIndex).toBe(true);
    }
    await using storage = await levelStorage({ path: dir.path });
    await using node = await createNode({ storage, resume: false, crews: [team()], models: { scripted: scriptedModel({ script }) } });
    const run = await node.resume('old-1');
    expect(run.waiting().map((a) => a.id)).toEqual([id]);
    await node.approve(id);
    expect((await run.result()).output).toBe('all paid');
  });
});
