import { afterEach, describe, expect, it } from 'vitest';
import { createNode, memoryStorage, type RunEvent, type TroupeNode } from '../index.js';
import { decode, encode } from '../core/codec.js';
import { createRunStore, type JournalEntry } from '../core/run-store.js';
import { STALE_ASK_REPLY_MS } from '../core/inbound-mail.js';
import { layout } from '../core/layout.js';
import type { Envelope } from '../core/envelope.js';
import type { Storage, StorageOp } from '../core/storage.js';
import { levelStorage } from '../storage/level.js';
import { postgresStorage } from '../storage/postgres/index.js';
import desk, { deskModels, models } from './fixtures/mail-crew.js';
import { placedCrew } from './helpers/fixtures.js';
import { fileURLToPath } from 'node:url';
import { useCleanups } from './helpers/cleanups.js';
import { useTestDatabase } from './helpers/postgres.js';
import { wrapStorage } from './helpers/wrap-storage.js';

/**
 * Mail between runs is rows (`inq:<run>:…`): written by the sender's own batch, drained by
 * whichever node holds the receiving run in the batch that puts it into its mailbox.
 */

const fx = useCleanups();

const keysOf = async (storage: Storage, prefix: string) => {
  const keys: string[] = [];
  for await (const [key] of storage.entries({ gte: prefix, lt: `${prefix}\uffff` })) keys.push(key);
  return keys;
};

const waitingFor = (node: TroupeNode, runId: string) =>
  new Promise<void>((resolve) => {
    const off = node.subscribe((event: RunEvent) => {
      if (event.type === 'approval.requested' && event.runId === runId) {
        off();
        resolve();
      }
    });
  });

/** Starts a desk run and resolves once it waits for its human (its clerk is then free). */
const openDesk = async (node: TroupeNode, runId: string, input = 'the opening question') => {
  const waiting = waitingFor(node, runId);
  const handle = await node.run(desk, { input, runId });
  await waiting;
  return handle;
};

const journalOf = (storage: Storage, runId: string) => createRunStore(storage).journal(runId);
const deadLetters = (journal: JournalEntry[]) => journal.filter((e) => e.kind === 'message' && e.data.deadLetter);

describe('mail between runs on one node', () => {
  it("is a row written by the sender's own batch, and leaves it in the batch that puts it into the receiver's mailbox", async () => {
    const batches: StorageOp[][] = [];
    const storage = wrapStorage(memoryStorage(), (ops, _options, next) => {
      batches.push([...ops]);
      return next();
    });
    await using node = await createNode({ storage, models });
    await openDesk(node, 'a1');
    await openDesk(node, 'b1');
    // b1's clerk is given a task whose answer is for a1's clerk.
    await node.tell('b1/clerk', 'task', { content: 'ping' }, { from: 'a1/clerk', replyTo: 'a1/clerk' });
    await expect.poll(() => batches.some((ops) => ops.some((op) => op.type === 'put' && op.key.startsWith('mbox:a1:clerk:')) && ops.some((op) => op.type === 'del' && op.key.startsWith('inq:a1:')))).toBe(true);

    const written = batches.find((ops) => ops.some((op) => op.type === 'put' && op.key.startsWith('inq:a1:b1:')))!;
    const row = written.find((op) => op.key.startsWith('inq:a1:b1:'))! as Extract<StorageOp, { type: 'put' }>;
    // Sealed with b1's checkpoint and the journal fact of the answer it sent.
    expect(written.some((op) => op.key.startsWith('ckpt:b1:'))).toBe(true);
    const facts = written.filter((op) => op.type === 'put' && op.key.startsWith('jrnl:b1:')).map((op) => decode((op as { value: Uint8Array }).value, Infinity) as JournalEntry);
    expect(facts).toContainEqual(expect.objectContaining({ kind: 'message', actor: 'clerk', data: expect.objectContaining({ to: 'a1/clerk', type: 'result' }) }));
    const envelope = decode(row.value, Infinity) as Envelope;
    expect(envelope).toMatchObject({ from: 'b1/clerk', to: 'a1/clerk', type: 'result', payload: { output: 'answer: ping' } });

    const accepted = batches.find((ops) => ops.some((op) => op.type === 'del' && op.key === row.key))!;
    const mail = accepted.filter((op) => op.type === 'put' && op.key.startsWith('mbox:a1:clerk:')).map((op) => decode((op as { value: Uint8Array }).value, Infinity) as Envelope);
    expect(mail.map((m) => m.id)).toEqual([envelope.id]);
    // Written once, taken once: no row is left, and no other batch put it into a mailbox.
    expect(await keysOf(storage, 'inq:')).toEqual([]);
    const intoMailbox = batches.filter((ops) => ops.some((op) => op.type === 'put' && op.key.startsWith('mbox:a1:') && (decode((op as { value: Uint8Array }).value, Infinity) as Envelope).id === envelope.id));
    expect(intoMailbox).toHaveLength(1);
  });

  it('makes mail for a run that ended, or never was, a dead letter of its sender, with no row left', async () => {
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models });
    await openDesk(node, 'b2');
    await node.tell('b2/clerk', 'task', { content: 'for nobody' }, { replyTo: 'ghost/clerk' });
    await expect.poll(async () => deadLetters(await journalOf(storage, 'b2'))).toEqual([expect.objectContaining({ data: expect.objectContaining({ deadLetter: true, to: 'ghost/clerk', type: 'result' }) })]);
    await expect.poll(() => keysOf(storage, 'inq:')).toEqual([]);
    // From outside, mail for a run that is not there is refused at once.
    await expect(node.tell('ghost/clerk', 'task', { content: 'x' })).rejects.toMatchObject({ code: 'UNKNOWN_ACTOR' });
  });

  it('deletes, when a node starts, mail left for a run that has ended or never existed, and keeps mail for a run of a crew it does not know', async () => {
    const dir = { path: await fx.dir() };
    {
      await using storage = await levelStorage({ path: dir.path });
      await using node = await createNode({ storage, models });
      await openDesk(node, 'open-1');
      const done = await node.run(desk, { input: 'x', runId: 'ended-1' });
      await expect.poll(async () => (await node.approvals({ status: 'pending', runId: 'ended-1' })).length).toBe(1);
      await node.approve((await node.approvals({ status: 'pending', runId: 'ended-1' }))[0]!.id);
      await done.result();
    }
    const row = (runId: string) => ({ id: `env_${runId}`, from: 'elsewhere/x', to: `${runId}/clerk`, type: 'note', payload: {}, seq: 0, ts: 1 });
    {
      await using storage = await levelStorage({ path: dir.path });
      await storage.write(['ended-1', 'never-1', 'open-1'].map((runId) => ({ type: 'put' as const, key: `inq:${runId}:elsewhere:000000000001:0000`, value: encode(row(runId)) })));
    }
    // A node without the desk crew: it holds none of these runs.
    await using storage = await levelStorage({ path: dir.path });
    await using node = await createNode({ storage });
    await expect.poll(() => keysOf(storage, 'inq:')).toEqual(['inq:open-1:elsewhere:000000000001:0000']);
    expect(node.status).toBe('running');
  });

  it('delivers rows left behind when a node stopped once a node opens the database again, and reports an unreadable or oversized row without deleting it', async () => {
    const dir = { path: await fx.dir() };
    {
      await using storage = await levelStorage({ path: dir.path });
      await using node = await createNode({ storage, models });
      await openDesk(node, 'a3');
    }
    // What a sender's batch left, its receiver never drained (the process died in between),
    // and a row another writer damaged.
    const note: Envelope = { id: 'env_left', from: 'b9/clerk', to: 'a3/clerk', type: 'note', payload: { text: 'still here' }, seq: 0, ts: 1 };
    {
      await using storage = await levelStorage({ path: dir.path });
      await storage.write([
        { type: 'put', key: 'inq:a3:b9:000000000004:0000', value: encode(note) },
        { type: 'put', key: 'inq:a3:b9:000000000005:0000', value: new Uint8Array([0xc1, 0xff, 0x00]) },
        // Well formed, but beyond the bound of anything crossing into a node (1 MiB by default).
        { type: 'put', key: 'inq:a3:b9:000000000006:0000', value: encode({ ...note, id: 'env_huge', payload: { text: 'x'.repeat(1_100_000) } }) },
      ]);
    }
    await using storage = await levelStorage({ path: dir.path });
    await using node = await createNode({ storage, models, crews: [desk] });
    await expect.poll(() => keysOf(storage, 'inq:')).toEqual(['inq:a3:b9:000000000005:0000', 'inq:a3:b9:000000000006:0000']);
    const mail: Envelope[] = [];
    for await (const [, value] of storage.entries({ gte: 'mbox:a3:clerk:', lt: 'mbox:a3:clerk:\uffff' })) mail.push(decode(value, Infinity) as Envelope);
    expect(mail.filter((m) => m.id === 'env_left')).toHaveLength(1);
    await expect.poll(async () => deadLetters(await journalOf(storage, 'a3'))).toEqual([
      expect.objectContaining({ data: expect.objectContaining({ key: 'inq:a3:b9:000000000005:0000', reason: expect.stringMatching(/^unreadable inbound mail/) }) }),
      expect.objectContaining({ data: expect.objectContaining({ key: 'inq:a3:b9:000000000006:0000', reason: expect.stringMatching(/^unreadable inbound mail: envelope of \d+ bytes exceeds the limit/) }) }),
    ]);
    expect(mail.some((m) => m.id === 'env_huge')).toBe(false);
    expect(node.status).toBe('running');
  });
});

describe('mail between runs across a crash', () => {
  /**
   * The memory storage of a process that dies at the first batch `dies` picks: that batch
   * and every write after it never reach the disk (the storage object outlives the "process").
   */
  const dyingAt = (inner: Storage, dies: (ops: readonly StorageOp[]) => boolean) => {
    let dead = false;
    let resolveDied!: () => void;
    const died = new Promise<void>((resolve) => (resolveDied = resolve));
    const storage = wrapStorage(inner, (ops, _options, next) => {
      if (!dead && dies(ops)) {
        dead = true;
        resolveDied();
      }
      return dead ? Promise.reject(new Error('the process died')) : next();
    });
    return { storage, died };
  };
  const mailOf = async (storage: Storage, runId: string, actor: string) => {
    const mail: Envelope[] = [];
    for await (const [, value] of storage.entries({ gte: `mbox:${runId}:${actor}:`, lt: `mbox:${runId}:${actor}:\uffff` })) mail.push(decode(value, Infinity) as Envelope);
    return mail;
  };
  const answersFrom = async (storage: Storage, runId: string, from: string) => (await mailOf(storage, runId, 'clerk')).filter((m) => m.from === from && m.type === 'result');
  const seed = async (disk: Storage) => {
    await using node = await createNode({ storage: disk, models });
    await openDesk(node, 'a1');
    await openDesk(node, 'b1');
  };

  it('keeps the row when the receiver dies before the batch that accepts it: the next node delivers it, once', async () => {
    const disk = memoryStorage();
    await seed(disk);
    const { storage, died } = dyingAt(disk, (ops) => ops.some((op) => op.type === 'del' && op.key.startsWith('inq:a1:')));
    {
      await using node = await createNode({ storage, models, crews: [desk] });
      await node.tell('b1/clerk', 'task', { content: 'ping' }, { from: 'a1/clerk', replyTo: 'a1/clerk' });
      await died;
      await node.close().catch(() => {});
    }
    expect(await keysOf(disk, 'inq:a1:b1:')).toHaveLength(1);
    expect(await answersFrom(disk, 'a1', 'b1/clerk')).toEqual([]);
    await using node = await createNode({ storage: disk, models, crews: [desk] });
    await expect.poll(() => keysOf(disk, 'inq:')).toEqual([]);
    expect((await answersFrom(disk, 'a1', 'b1/clerk')).map((m) => m.payload)).toEqual([{ output: 'answer: ping' }]);
    expect(node.status).toBe('running');
  });

  it('writes no row when the sender dies before its batch: the step is redone on resume and its mail sent once', async () => {
    const disk = memoryStorage();
    await seed(disk);
    const { storage, died } = dyingAt(disk, (ops) => ops.some((op) => op.type === 'put' && op.key.startsWith('inq:a1:')));
    {
      await using node = await createNode({ storage, models, crews: [desk] });
      await node.tell('b1/clerk', 'task', { content: 'pong' }, { from: 'a1/clerk', replyTo: 'a1/clerk' });
      await died;
      await node.close().catch(() => {});
    }
    expect(await keysOf(disk, 'inq:')).toEqual([]);
    await using node = await createNode({ storage: disk, models, crews: [desk] });
    await expect.poll(async () => (await answersFrom(disk, 'a1', 'b1/clerk')).map((m) => m.payload)).toEqual([{ output: 'answer: pong' }]);
    await expect.poll(() => keysOf(disk, 'inq:')).toEqual([]);
    expect(node.status).toBe('running');
  });
});

describe('mail between runs held by different nodes of one Postgres database', () => {
  const db = useTestDatabase();
  const nodes: TroupeNode[] = [];
  const storages: Storage[] = [];
  afterEach(async () => {
    for (const node of nodes.splice(0)) await node.close();
    for (const storage of storages.splice(0)) await storage.close();
  });
  const open = async (nodeId: string, crews: boolean, options: { pollMs?: number; keeperLatencyMs?: number } = {}) => {
    const storage = await postgresStorage({ connectionString: db.url, leaseMs: 1_000 });
    storages.push(storage);
    const node = await createNode({ storage, nodeId, pollMs: options.pollMs ?? 5_000, ...(crews ? { crews: [desk], models: deskModels(options.keeperLatencyMs ?? 0) } : {}) });
    nodes.push(node);
    return { node, storage };
  };

  it('answers an ask from a node that hosts nothing with the agent of a run another node holds; both ways go as rows', async () => {
    const worker = await open('worker', true);
    await openDesk(worker.node, 'q1');
    const front = await open('front', false);
    // The front node has no transport: the question and the answer cross as rows, woken by NOTIFY.
    const reply = await front.node.ask('q1/clerk', 'task', { content: 'what is a row' }, { timeoutMs: 20_000 });
    expect(reply).toMatchObject({ from: 'q1/clerk', type: 'result', payload: { output: 'answer: what is a row' } });
    await expect.poll(() => db.sql("SELECT key FROM troupe_kv WHERE key LIKE 'inq:%'")).toEqual([]);
    expect(await db.sql("SELECT status FROM troupe_runs WHERE run_id = 'q1'")).toEqual([{ status: 'waiting' }]);
  });

  it('makes a run that waits for a human and is held by nobody free to take when mail comes for it; it is let go again after', async () => {
    const first = await open('first', true);
    await openDesk(first.node, 'q2');
    await first.node.close();
    const taker = await open('taker', true);
    // Waiting for a human and nobody's: no node takes it for that alone.
    expect(await db.sql("SELECT lease_live FROM troupe_run_leases WHERE run_id = 'q2'")).toEqual([{ lease_live: false }]);
    const front = await open('front2', false);
    const reply = await front.node.ask('q2/clerk', 'task', { content: 'anyone there' }, { timeoutMs: 20_000 });
    expect(reply).toMatchObject({ payload: { output: 'answer: anyone there' } });
    const journal = await journalOf(taker.storage, 'q2');
    expect(journal.filter((e) => e.kind === 'run.resumed')).toHaveLength(1);
    // Its approval still waits, and no node holds the run for it.
    await expect.poll(() => db.sql("SELECT lease_live FROM troupe_run_leases WHERE run_id = 'q2'")).toEqual([{ lease_live: false }]);
    expect((await taker.node.approvals({ status: 'pending', runId: 'q2' })).map((a) => a.tool)).toEqual(['file']);
  });

  it('finds mail whose notification never came when it polls: for a run it holds, and for a run nobody holds', async () => {
    // A row written behind the nodes' backs (as if its NOTIFY were lost) for a run held while
    // its keeper works, and one for a run that waits for a human.
    const held = await open('held', true, { pollMs: 100, keeperLatencyMs: 60_000 });
    const running = await held.node.run(desk, { input: 'slow', runId: 'rh' });
    await expect.poll(async () => (await journalOf(held.storage, 'rh')).some((e) => e.kind === 'state' && e.actor === 'keeper' && e.data.state === 'planning')).toBe(true);
    const other = await open('other', true);
    await openDesk(other.node, 'rw');
    const row = (runId: string, id: string) => ({ id, from: 'elsewhere/x', to: `${runId}/clerk`, type: 'note', payload: {}, seq: 0, ts: 1 });
    await db.sql('INSERT INTO troupe_kv (key, value) VALUES ($1, $2), ($3, $4)', [
      'inq:rh:elsewhere:000000000001:0000', Buffer.from(encode(row('rh', 'env_rh'))),
      'inq:rw:elsewhere:000000000001:0000', Buffer.from(encode(row('rw', 'env_rw'))),
    ]);
    await expect.poll(() => db.sql("SELECT key FROM troupe_kv WHERE key LIKE 'inq:%'"), { timeout: 10_000 }).toEqual([]);
    for (const runId of ['rh', 'rw']) {
      const mail: Envelope[] = [];
      for await (const [, value] of held.storage.entries({ gte: `mbox:${runId}:clerk:`, lt: `mbox:${runId}:clerk:\uffff` })) mail.push(decode(value, Infinity) as Envelope);
      expect(mail.map((m) => m.id)).toContain(`env_${runId}`);
    }
    expect(running.status).toBe('running');
  });

  it('delivers mail for a run whose node was SIGKILLed through the node that takes the run over, once', async () => {
    const CREW = fileURLToPath(new URL('./fixtures/mail-crew.ts', import.meta.url));
    const startNode = async (nodeId: string, keeperLatencyMs: number) => {
      const proc = fx.spawn(['node', '--db', db.url, '--crew', CREW, '--node-id', nodeId, '--poll-ms', '100', '--lease-ms', '1000'], { TROUPE_KEEPER_LATENCY_MS: String(keeperLatencyMs) });
      await proc.waitFor(/ready: taking runs of desk/);
      return proc;
    };
    const doomed = await startNode('doomed', 60_000);
    const front = await open('front3', false);
    await front.node.submit(desk, { input: 'first question', runId: 'k1', source: CREW });
    // Killed with the run held: its clerk has answered, its keeper's model call is in flight.
    await expect
      .poll(async () => (await journalOf(front.storage, 'k1')).some((e) => e.kind === 'state' && e.actor === 'keeper' && e.data.state === 'planning'), { timeout: 20_000 })
      .toBe(true);
    doomed.child.kill('SIGKILL');
    expect((await doomed.exit).signal).toBe('SIGKILL');
    // The question is a row while nobody executes the run; the next node takes it with the run.
    const asked = front.node.ask('k1/clerk', 'task', { content: 'still there?' }, { timeoutMs: 30_000 });
    await expect.poll(() => db.sql("SELECT run_id FROM troupe_mail")).toEqual([{ run_id: 'k1' }]);
    const heir = await startNode('heir', 0);
    expect(await asked).toMatchObject({ from: 'k1/clerk', type: 'result', payload: { output: 'answer: still there?' } });
    // The run goes on to its keeper's approval; the question was answered once, and no mail is left.
    await expect.poll(async () => (await front.node.approvals({ status: 'pending', runId: 'k1' })).length, { timeout: 20_000 }).toBe(1);
    const answers = (await journalOf(front.storage, 'k1')).filter((e) => e.kind === 'message' && String(e.data.to).startsWith('_ask.front3/'));
    expect(answers).toHaveLength(1);
    expect(await db.sql('SELECT key FROM troupe_mail')).toEqual([]);
    expect((await db.sql<{ holder: string }>("SELECT holder FROM troupe_run_leases WHERE run_id = 'k1'"))[0]?.holder ?? '').not.toMatch(/^doomed\./);
    heir.child.kill('SIGTERM');
    expect((await heir.exit).code).toBe(0);
  }, 60_000);

  it('refuses a crew that places actors on named nodes, writing nothing: a run is executed whole by the node that holds it', async () => {
    const { node } = await open('placer', true);
    for (const start of [() => node.run(placedCrew(), { input: 'x', runId: 'placed-1' }), () => node.submit(placedCrew(), { input: 'x', runId: 'placed-2' })]) {
      await expect(start()).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/places writer on node "b": on a database nodes share/) });
    }
    expect(await db.sql("SELECT run_id FROM troupe_runs WHERE run_id LIKE 'placed-%'")).toEqual([]);
  });

  it("writes a run's mail for a run another node holds in the sender's transaction, and the holder drains it", async () => {
    const a = await open('node-a', true);
    const b = await open('node-b', true);
    await openDesk(a.node, 'ra');
    await openDesk(b.node, 'rb');
    // rb's clerk (node b) answers for ra's clerk (node a).
    await b.node.tell('rb/clerk', 'task', { content: 'across' }, { from: 'ra/clerk', replyTo: 'ra/clerk' });
    await expect
      .poll(async () => {
        const mail: Envelope[] = [];
        for await (const [, value] of a.storage.entries({ gte: 'mbox:ra:clerk:', lt: 'mbox:ra:clerk:\uffff' })) mail.push(decode(value, Infinity) as Envelope);
        return mail.filter((m) => m.from === 'rb/clerk').map((m) => m.payload);
      }, { timeout: 20_000 })
      .toEqual([{ output: 'answer: across' }]);
    await expect.poll(() => db.sql("SELECT key FROM troupe_kv WHERE key LIKE 'inq:%'")).toEqual([]);
  });

  it("deletes replies left in a gone node's ask inbox once they are an hour old, and keeps younger ones and unreadable ones", async () => {
    // Replies to asks of a node that died and whose id never comes back: nobody else reads them.
    const writer = await postgresStorage({ connectionString: db.url });
    storages.push(writer);
    const reply = (id: string, ts: number): Envelope => ({ id, from: 'q9/clerk', to: '_ask.gone/c1', type: 'result', payload: {}, corr: 'c1', seq: 0, ts });
    const stale = layout.inboundMail('_ask.gone', 'q9', 1, 0);
    const young = layout.inboundMail('_ask.gone', 'q9', 2, 0);
    const unreadable = layout.inboundMail('_ask.gone', 'q9', 3, 0);
    await writer.write([
      { type: 'put', key: stale, value: encode(reply('env_old', Date.now() - STALE_ASK_REPLY_MS - 60_000)) },
      { type: 'put', key: young, value: encode(reply('env_new', Date.now() - 60_000)) },
      { type: 'put', key: unreadable, value: Uint8Array.of(0xc1) },
    ]);
    await open('sweeper', true, { pollMs: 100 });
    await expect.poll(() => writer.get(stale), { timeout: 10_000 }).toBeUndefined();
    // Swept in the same pass over that inbox as the stale one: still there.
    expect(await writer.get(young)).toBeDefined();
    expect(await writer.get(unreadable)).toBeDefined();
  });
});
