import { describe, expect, it } from 'vitest';
import { createNode } from '../core/node.js';
import { prefixRange, type Storage } from '../core/storage.js';
import { decode } from '../core/codec.js';
import { levelStorage } from '../storage/level.js';
import { scriptedModel } from '../models/scripted.js';
import { encodeEnvelope } from '../core/envelope.js';
import { testEnvelope } from '../testing/transport-conformance.js';
import { createOutbox, transportKeys } from '../transports/outbox.js';
import { wsTransport } from '../transports/ws.js';
import { pairScript, placedCrew } from './helpers/fixtures.js';
import { tempDir } from './helpers/temp.js';
import { wrapStorage } from './helpers/wrap-storage.js';

const SECRET = 'single-outbox-secret-0123456789';

/** A storage that keeps the keys of every batch written through it. */
function recording(inner: Storage) {
  const batches: string[][] = [];
  const storage = wrapStorage(inner, async (ops, _options, next) => {
    await next();
    batches.push(ops.filter((op) => op.type === 'put').map((op) => op.key));
  });
  return { storage, batches };
}

async function keys(storage: Storage, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const [key] of storage.entries(prefixRange(prefix))) out.push(key);
  return out;
}

describe('an envelope leaving a run for a peer is written once, with the run’s checkpoint', () => {
  it('puts its outbox entry in the checkpoint batch and never writes it under rout:', async () => {
    await using dirA = await tempDir();
    await using dirB = await tempDir();
    await using levelA = await levelStorage({ path: dirA.path });
    await using storeB = await levelStorage({ path: dirB.path });
    const { storage: storeA, batches } = recording(levelA);
    const models = () => ({ scripted: scriptedModel({ script: pairScript }) });
    const atB = wsTransport({ secret: SECRET, listen: { host: '127.0.0.1', port: 0 } });
    await using b = await createNode({ nodeId: 'b', storage: storeB, transport: atB, crews: [placedCrew()], models: models() });
    const url = (await atB.created).address!.url;
    const atA = wsTransport({ secret: SECRET, peers: { b: url } });
    await using a = await createNode({ nodeId: 'a', storage: storeA, transport: atA, crews: [placedCrew()], models: models() });
    const run = await a.run(placedCrew(), { input: 'actors', runId: 'one-outbox' });
    expect((await run.result()).output).toBe('final: a brief about actor and state');
    expect(b.status).toBe('running');
    const toPeer = batches.flat().filter((key) => key.startsWith('outbox:b:'));
    // The spawn of b's part and the writer's task at least, each in a batch with a checkpoint of the run.
    expect(toPeer.length).toBeGreaterThanOrEqual(2);
    for (const key of toPeer) {
      const batch = batches.find((keys) => keys.includes(key))!;
      expect(batch.some((k) => k.startsWith('ckpt:one-outbox:')), `${key} written without the run's checkpoint: ${batch.join(', ')}`).toBe(true);
    }
    expect(batches.flat().filter((key) => key.startsWith('rout:'))).toEqual([]);
    // Acknowledged and deleted, with the outbox's numbering kept at the highest seq it used.
    await (await atA.created).flushed('b');
    await a.close(); // the transport's last batch, which deletes what b acknowledged
    expect(await keys(levelA, 'outbox:b:')).toEqual([]);
    const outseq = decode((await levelA.get(transportKeys.outseq('b')))!) as number;
    expect(outseq).toBe(Math.max(...toPeer.map((key) => Number(key.slice(key.lastIndexOf(':') + 1)))));
  });
});

describe('Outbox.reserve', () => {
  const open = async (dir: string, durable: string[] = []) => {
    const storage = await levelStorage({ path: dir });
    const outbox = await createOutbox({ storage, sync: false, onDurable: (to) => durable.push(to) });
    return { storage, outbox };
  };
  const bytes = (i: number) => encodeEnvelope(testEnvelope(i));

  it('holds entries numbered after an open reservation until it commits, so the pair keeps its order', async () => {
    await using dir = await tempDir();
    const { storage, outbox } = await open(dir.path);
    try {
      const r = outbox.reserve('b', bytes(1))!;
      expect(r.seq).toBe(1);
      await outbox.append('b', bytes(2));
      expect(outbox.held('b').entries).toBe(2);
      // Durable, but behind seq 1, whose batch is not: nothing may be sent yet.
      expect(outbox.unacked('b').map((e) => e.seq)).toEqual([]);
      await storage.write([...r.ops]);
      r.commit();
      expect(outbox.unacked('b').map((e) => e.seq)).toEqual([1, 2]);
      outbox.ack('b', 2);
      await outbox.flushed('b');
    } finally {
      await outbox.close(new Error('done'));
      await storage.close();
    }
  });

  it('does not send a reservation committed while an older append is still being written ahead of it', async () => {
    await using dir = await tempDir();
    const level = await levelStorage({ path: dir.path });
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const storage = wrapStorage(level, async (ops, _options, next) => {
      if (ops.some((op) => op.key === transportKeys.outbox('b', 1))) await gate;
      return next();
    });
    const outbox = await createOutbox({ storage, sync: false, onDurable: () => {} });
    try {
      const first = outbox.append('b', bytes(1)); // seq 1: its write is held
      const r = outbox.reserve('b', bytes(2))!;
      expect(r.seq).toBe(2);
      await level.write([...r.ops]); // the run's batch lands first
      r.commit();
      // Sent now, seq 2 would reach the receiver first, and seq 1 would be dropped there as old.
      expect(outbox.unacked('b').map((e) => e.seq)).toEqual([]);
      expect(outbox.durable('b')).toBe(0);
      open();
      await first;
      expect(outbox.unacked('b').map((e) => e.seq)).toEqual([1, 2]);
    } finally {
      open(); // a failed expectation must not leave close() waiting on the held write
      await outbox.close(new Error('done'));
      await level.close();
    }
  });

  it('leaves a gap for an aborted reservation that others follow, and gives the newest number back', async () => {
    await using dir = await tempDir();
    const { storage, outbox } = await open(dir.path);
    try {
      const first = outbox.reserve('b', bytes(1))!;
      const second = outbox.reserve('b', bytes(2))!;
      expect([first.seq, second.seq]).toEqual([1, 2]);
      await storage.write([...second.ops]);
      second.commit();
      expect(outbox.unacked('b').map((e) => e.seq)).toEqual([]); // behind seq 1
      first.abort(); // its batch failed: seq 1 never exists, receivers skip the gap
      expect(outbox.unacked('b').map((e) => e.seq)).toEqual([2]);
      const newest = outbox.reserve('b', bytes(3))!;
      expect(newest.seq).toBe(3);
      newest.abort();
      expect(outbox.reserve('b', bytes(3))!.seq).toBe(3); // the newest number, given back
      expect(outbox.held('b').entries).toBe(2);
    } finally {
      await outbox.close(new Error('done'));
      await storage.close();
    }
  });

  it('after a crash, numbers new envelopes after an entry a run batch wrote beyond the saved outseq', async () => {
    await using dir = await tempDir();
    {
      const { storage, outbox } = await open(dir.path);
      await outbox.append('b', bytes(1)); // outseq:b = 1
      const r = outbox.reserve('b', bytes(2))!;
      await storage.write([...r.ops]); // the run's batch landed; the process dies before anything else
      await outbox.close(new Error('killed'));
      await storage.close();
    }
    const { storage, outbox } = await open(dir.path);
    try {
      expect(outbox.unacked('b').map((e) => e.seq)).toEqual([1, 2]);
      await outbox.append('b', bytes(3));
      expect(outbox.durable('b')).toBe(3);
      outbox.ack('b', 3);
      await outbox.flushed('b');
      // Deleted on acknowledgement (by the outbox's next batch), the numbering saved past them.
      await outbox.close(new Error('done'));
      expect(await keys(storage, 'outbox:')).toEqual([]);
      expect(decode((await storage.get(transportKeys.outseq('b')))!)).toBe(3);
    } finally {
      await outbox.close(new Error('done'));
      await storage.close();
    }
  });

  it('keeps the numbering of a reservation committed while the outbox writes: a restart never reuses its seq', async () => {
    await using dir = await tempDir();
    {
      const level = await levelStorage({ path: dir.path });
      let hold: Promise<void> | undefined;
      const storage = wrapStorage(level, async (_ops, _options, next) => {
        await hold;
        return next();
      });
      const outbox = await createOutbox({ storage, sync: false, onDurable: () => {} });
      let release!: () => void;
      hold = new Promise((resolve) => (release = resolve));
      const first = outbox.append('b', bytes(1)); // its batch (outseq 1) waits on the gate
      await Promise.resolve();
      const r = outbox.reserve('b', bytes(2))!;
      await level.write([...r.ops]); // the run's batch lands while the outbox's is in flight
      r.commit();
      release();
      await first;
      expect(outbox.durable('b')).toBe(2);
      hold = undefined;
      outbox.ack('b', 2); // both delivered: their entries go, outseq must reach 2 first
      await outbox.close(new Error('done'));
      expect(await keys(level, 'outbox:')).toEqual([]);
      await level.close();
    }
    const { storage, outbox } = await open(dir.path);
    try {
      await outbox.append('b', bytes(3));
      expect(outbox.durable('b')).toBe(3);
    } finally {
      await outbox.close(new Error('done'));
      await storage.close();
    }
  });

  it('takes nothing when the destination is full, so the caller falls back to its own record and send', async () => {
    await using dir = await tempDir();
    const storage = await levelStorage({ path: dir.path });
    const outbox = await createOutbox({ storage, sync: false, onDurable: () => {}, maxEntries: 1 });
    try {
      const r = outbox.reserve('b', bytes(1))!;
      expect(outbox.reserve('b', bytes(2))).toBeUndefined();
      r.abort();
      expect(outbox.reserve('b', bytes(2))?.seq).toBe(1);
    } finally {
      await outbox.close(new Error('done'));
      await storage.close();
    }
  });
});
