import { describe, expect, it } from 'vitest';
import type { Storage, StorageOp } from '../core/storage.js';
import { memoryStorage } from '../storage/memory.js';
import { createInbox } from '../transports/inbox.js';
import { createOutbox } from '../transports/outbox.js';
import { createMergedWrites } from '../transports/merged-writes.js';
import { encodeEnvelope } from '../core/envelope.js';
import { encode } from '../core/codec.js';
import { createWsTransport, type WsTransport, type WsTransportOptions } from '../transports/ws.js';
import { ErrorCode, TroupeError } from '../core/errors.js';
import { recorder, testEnvelope } from '../testing/transport-conformance.js';
import { wrapStorage } from './helpers/wrap-storage.js';
import { manualClock, type ManualClock } from '../core/clock.js';

const SECRET = 'transport-test-secret-0123456789';

/** A storage that remembers the ops of every batch written through it. */
function countingStorage(inner: Storage = memoryStorage()): Storage & { batches: StorageOp[][] } {
  const batches: StorageOp[][] = [];
  return Object.assign(Object.create(inner) as Storage, {
    batches,
    write(ops: readonly StorageOp[], options?: Parameters<Storage['write']>[1]) {
      batches.push([...ops]);
      return inner.write(ops, options);
    },
    get: inner.get.bind(inner),
    entries: inner.entries.bind(inner),
    claim: inner.claim.bind(inner),
    release: inner.release.bind(inner),
    close: inner.close.bind(inner),
  });
}

const touching = (batches: StorageOp[][], prefix: string, type?: StorageOp['type']) =>
  batches.filter((ops) => ops.some((op) => op.key.startsWith(prefix) && (type === undefined || op.type === type)));

const items = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => ({ seq: from + i, envelope: testEnvelope(from + i) }));

describe('the receiver writes its inbox state once per frame', () => {
  it('records a frame of 100 delivered envelopes with one storage batch holding the last cursor', async () => {
    const storage = countingStorage();
    const inbox = createInbox(storage, false);
    const delivered: number[] = [];
    const outcome = await inbox.receive('peer', { epoch: 'e1', items: items(1, 100) }, { deliver: async (_e, _f, { seq }) => void delivered.push(seq), proceed: () => true });
    expect(delivered).toHaveLength(100);
    expect(outcome).toMatchObject({ delivered: 100, cursor: { epoch: 'e1', seq: 100 } });
    expect(storage.batches).toHaveLength(1);
    expect(await inbox.cursor('peer')).toEqual({ epoch: 'e1', seq: 100 });
  });

  it('puts the dead letters of a frame into the same batch as its cursor', async () => {
    const storage = countingStorage();
    const inbox = createInbox(storage, false);
    const outcome = await inbox.receive('peer', { epoch: 'e1', items: items(1, 10) }, {
      deliver: async (_e, _f, { seq }) => {
        if (seq % 3 === 0) throw new TroupeError(ErrorCode.UNKNOWN_ACTOR, 'nobody there');
      },
      proceed: () => true,
    });
    expect(outcome).toMatchObject({ delivered: 7, deadLetters: 3, refused: [3, 6, 9], cursor: { seq: 10 } });
    expect(storage.batches).toHaveLength(1);
    expect(await inbox.deadLetters()).toHaveLength(3);
  });

  it('writes nothing itself when every deliverer took its receipt, and acknowledges only what is durable', async () => {
    const storage = countingStorage();
    const inbox = createInbox(storage, false);
    const outcome = await inbox.receive('peer', { epoch: 'e1', items: items(1, 20) }, {
      deliver: (_e, _f, receipt) => storage.write(receipt.takeCursorOps()),
      proceed: () => true,
    });
    expect(outcome.cursor).toEqual({ epoch: 'e1', seq: 20 });
    expect(storage.batches).toHaveLength(20); // the deliverer's own, one per envelope
  });

  it('on a transient failure mid-frame records and acknowledges what came before it', async () => {
    const storage = countingStorage();
    const inbox = createInbox(storage, false);
    const outcome = await inbox.receive('peer', { epoch: 'e1', items: items(1, 10) }, {
      deliver: async (_e, _f, { seq }) => {
        if (seq === 6) throw new Error('disk hiccup');
      },
      proceed: () => true,
    });
    expect(outcome.failure).toBeInstanceOf(Error);
    expect(outcome.cursor.seq).toBe(5);
    expect(storage.batches).toHaveLength(1);
    expect(await inbox.cursor('peer')).toEqual({ epoch: 'e1', seq: 5 });
    // The rest comes again and is delivered once, the first five dropped as duplicates.
    const again = await inbox.receive('peer', { epoch: 'e1', items: items(1, 10) }, { deliver: async () => {}, proceed: () => true });
    expect(again).toMatchObject({ delivered: 5, duplicates: 5, cursor: { seq: 10 } });
  });

  it('acknowledges nothing beyond the durable cursor when the frame batch fails', async () => {
    const inner = memoryStorage();
    let fail = false;
    const storage = Object.assign(Object.create(inner) as Storage, {
      write: (ops: readonly StorageOp[]) => (fail ? Promise.reject(new Error('full disk')) : inner.write(ops)),
      get: inner.get.bind(inner),
      entries: inner.entries.bind(inner),
    });
    const inbox = createInbox(storage, false);
    await inbox.receive('peer', { epoch: 'e1', items: items(1, 5) }, { deliver: async () => {}, proceed: () => true });
    fail = true;
    const outcome = await inbox.receive('peer', { epoch: 'e1', items: items(6, 10) }, { deliver: async () => {}, proceed: () => true });
    expect(outcome.failure).toBeInstanceOf(Error);
    expect(outcome.cursor.seq).toBe(5);
    expect(await inbox.cursor('peer')).toEqual({ epoch: 'e1', seq: 5 });
  });
});

describe('the sender writes its outbox once per flush and once per acknowledgement', () => {
  const outboxKeys = async (storage: Storage) => {
    const keys: string[] = [];
    for await (const [key] of storage.entries({ gte: 'outbox:', lt: 'outbox;' })) keys.push(key);
    return keys;
  };

  it('persists every envelope appended in one tick with one storage batch, one key per destination', async () => {
    const storage = countingStorage();
    const outbox = await createOutbox({ storage, sync: false, onDurable: () => {} });
    const before = storage.batches.length;
    await Promise.all(Array.from({ length: 500 }, (_, i) => outbox.append(i % 2 ? 'x' : 'y', encodeEnvelope(testEnvelope(i)))));
    // Numbered per destination, in the order they were appended.
    expect(outbox.unacked('x').map((e) => e.bytes)).toEqual(Array.from({ length: 250 }, (_, i) => encodeEnvelope(testEnvelope(2 * i + 1))));
    expect(outbox.unacked('x').map((e) => e.seq)).toEqual(Array.from({ length: 250 }, (_, i) => i + 1));
    expect(storage.batches.slice(before)).toHaveLength(1);
    expect(storage.batches.at(-1)!.filter((op) => op.key.startsWith('outbox:'))).toHaveLength(2);
    await outbox.close(new Error('closed'));
    // What the next process's outbox reads back: every envelope, in order, with its bytes.
    const again = await createOutbox({ storage, sync: false, onDurable: () => {} });
    expect(again.unacked('x').map((e) => e.seq)).toEqual(Array.from({ length: 250 }, (_, i) => i + 1));
    expect(again.unacked('y').map((e) => e.bytes)).toEqual(Array.from({ length: 250 }, (_, i) => encodeEnvelope(testEnvelope(2 * i))));
  });

  it('writes a burst larger than one write in slices, in seq order, each sendable as soon as it is durable', async () => {
    const storage = countingStorage();
    const durableAt: number[] = [];
    let outbox!: Awaited<ReturnType<typeof createOutbox>>;
    outbox = await createOutbox({ storage, sync: false, onDurable: (to) => durableAt.push(outbox.durable(to)), maxEntries: 10_000 });
    const before = storage.batches.length;
    const seqs = Array.from({ length: 3_000 }, (_, i) => i + 1);
    await Promise.all(seqs.map((i) => outbox.append('x', encodeEnvelope(testEnvelope(i)))));
    // Slices of 1,024 appends: the first is sendable while the rest is still being written.
    expect(durableAt).toEqual([1_024, 2_048, 3_000]);
    expect(storage.batches.slice(before)).toHaveLength(3);
    const { entries, from } = outbox.sendable('x', 0);
    expect(entries.slice(from).map((e) => e.seq)).toEqual(seqs);
    await outbox.close(new Error('closed'));
  });

  it('starts the write of the next slice before it announces the slice just written, so the storage writes while frames are sent', async () => {
    const events: string[] = [];
    const inner = memoryStorage();
    const gates: Array<() => void> = [];
    const storage = countingStorage(
      Object.assign(Object.create(inner) as Storage, {
        get: inner.get.bind(inner),
        entries: inner.entries.bind(inner),
        write: async (ops: readonly StorageOp[], options?: Parameters<Storage['write']>[1]) => {
          if (ops.some((op) => op.key.startsWith('outbox:'))) {
            events.push('write');
            await new Promise<void>((resolve) => gates.push(resolve));
          }
          return inner.write(ops, options);
        },
      }),
    );
    let outbox!: Awaited<ReturnType<typeof createOutbox>>;
    outbox = await createOutbox({ storage, sync: false, onDurable: (to) => events.push(`durable ${outbox.durable(to)}`), maxEntries: 10_000 });
    const sends = Array.from({ length: 2_000 }, (_, i) => outbox.append('x', encodeEnvelope(testEnvelope(i + 1))));
    while (gates.length === 0) await new Promise((resolve) => setImmediate(resolve));
    gates.shift()!();
    while (gates.length === 0) await new Promise((resolve) => setImmediate(resolve));
    // The second write was under way before the first slice was announced as sendable.
    expect(events).toEqual(['write', 'write', 'durable 1024']);
    gates.shift()!();
    await Promise.all(sends);
    expect(events).toEqual(['write', 'write', 'durable 1024', 'durable 2000']);
    await outbox.close(new Error('closed'));
  });

  it('gives the sends of one write one shared promise, and settles each slice of a burst with its own write', async () => {
    const storage = countingStorage();
    const outbox = await createOutbox({ storage, sync: false, onDurable: () => {}, maxEntries: 10_000 });
    const promises = Array.from({ length: 3_000 }, (_, i) => outbox.append('x', encodeEnvelope(testEnvelope(i + 1))));
    // One promise per write of 1,024, not one per send: a burst allocates three, not 3,000.
    expect(new Set(promises).size).toBe(3);
    expect(promises[0]).toBe(promises[1_023]);
    expect(promises[1_023]).not.toBe(promises[1_024]);
    await Promise.all(promises);
    expect(outbox.durable('x')).toBe(3_000);
    await outbox.close(new Error('closed'));
  });

  it('rejects the sends of a failed write and of every write queued behind it, keeping those already durable', async () => {
    let writes = 0;
    const inner = memoryStorage();
    const storage = wrapStorage(inner, (_ops, _options, next) => (++writes === 2 ? Promise.reject(new Error('disk full')) : next()));
    const outbox = await createOutbox({ storage, sync: false, onDurable: () => {}, maxEntries: 10_000 });
    writes = 0; // the epoch's write at open is not one of the burst's
    const settled = await Promise.allSettled(Array.from({ length: 3_000 }, (_, i) => outbox.append('x', encodeEnvelope(testEnvelope(i + 1)))));
    const failed = settled.flatMap((s, i) => (s.status === 'rejected' ? [i + 1] : []));
    expect(failed).toEqual(Array.from({ length: 3_000 - 1_024 }, (_, i) => i + 1_025));
    const reasons = new Set(settled.flatMap((s) => (s.status === 'rejected' ? [(s.reason as TroupeError).code] : [])));
    expect([...reasons]).toEqual([ErrorCode.STORAGE_FAILED]);
    expect(outbox.durable('x')).toBe(1_024);
    // An outbox that could not persist refuses what comes after, rather than run ahead of its state.
    await expect(outbox.append('x', encodeEnvelope(testEnvelope(3_001)))).rejects.toMatchObject({ code: ErrorCode.STORAGE_FAILED });
    await outbox.close(new Error('closed'));
  });

  it('splits a long flush into bounded groups, deletes a group only once its last envelope is acknowledged, and resends the rest after a restart', async () => {
    const storage = countingStorage();
    const outbox = await createOutbox({ storage, sync: false, onDurable: () => {} });
    await Promise.all(Array.from({ length: 600 }, (_, i) => outbox.append('x', encodeEnvelope(testEnvelope(i + 1)))));
    expect(await outboxKeys(storage)).toEqual(['outbox:x:000000000001..000000000256', 'outbox:x:000000000257..000000000512', 'outbox:x:000000000513..000000000600']);
    outbox.ack('x', 300);
    await outbox.close(new Error('closed'));
    expect(await outboxKeys(storage)).toHaveLength(2);
    const again = await createOutbox({ storage, sync: false, onDurable: () => {} });
    // The receiver drops 257…300 as duplicates; nothing after 300 is lost.
    expect(again.unacked('x').map((e) => e.seq)).toEqual(Array.from({ length: 344 }, (_, i) => i + 257));
    await again.append('x', encodeEnvelope(testEnvelope(601)));
    expect(again.durable('x')).toBe(601);
    again.ack('x', 601);
    await again.flushed('x');
    await again.close(new Error('closed'));
    expect(await outboxKeys(storage)).toEqual([]);
  });

  it('keeps the unacknowledged entries exact through many partial acknowledgements, and says where sending resumes', async () => {
    const storage = countingStorage();
    const outbox = await createOutbox({ storage, sync: false, onDurable: () => {}, maxEntries: 10_000 });
    await Promise.all(Array.from({ length: 5_000 }, (_, i) => outbox.append('x', encodeEnvelope(testEnvelope(i + 1)))));
    for (let upTo = 100; upTo < 5_000; upTo += 100) {
      outbox.ack('x', upTo);
      const { entries, from } = outbox.sendable('x', upTo + 50);
      expect(entries[from]!.seq).toBe(upTo + 51);
      expect(outbox.sendable('x', 0).entries[outbox.sendable('x', 0).from]!.seq).toBe(upTo + 1);
      expect(outbox.held('x').entries).toBe(5_000 - upTo);
    }
    expect(outbox.unacked('x').map((e) => e.seq)).toEqual(Array.from({ length: 100 }, (_, i) => 4_901 + i));
    const { entries, from } = outbox.sendable('x', 5_000);
    expect(from).toBe(entries.length);
    outbox.ack('x', 5_000);
    await outbox.flushed('x');
    expect(outbox.unacked('x')).toEqual([]);
    await outbox.close(new Error('closed'));
  });

  it('reads single-envelope keys of a run batch or an older database among groups, in seq order', async () => {
    const storage = countingStorage();
    const outbox = await createOutbox({ storage, sync: false, onDurable: () => {} });
    await Promise.all([1, 2, 3].map((i) => outbox.append('x', encodeEnvelope(testEnvelope(i)))));
    const reserved = outbox.reserve('x', encodeEnvelope(testEnvelope(4)))!;
    await storage.write(reserved.ops);
    reserved.commit();
    await Promise.all([5, 6].map((i) => outbox.append('x', encodeEnvelope(testEnvelope(i)))));
    await outbox.close(new Error('closed'));
    expect(await outboxKeys(storage)).toEqual(['outbox:x:000000000001..000000000003', 'outbox:x:000000000004', 'outbox:x:000000000005..000000000006']);
    const again = await createOutbox({ storage, sync: false, onDurable: () => {} });
    expect(again.unacked('x').map((e) => e.bytes)).toEqual([1, 2, 3, 4, 5, 6].map((i) => encodeEnvelope(testEnvelope(i))));
  });

  it('refuses a group whose value does not hold the envelopes its key names, and leaves it as it is', async () => {
    const storage = memoryStorage();
    const damaged = encode([encodeEnvelope(testEnvelope(1))]);
    await storage.write([{ type: 'put', key: 'outbox:x:000000000001..000000000002', value: damaged }]);
    await expect(createOutbox({ storage, sync: false, onDurable: () => {} })).rejects.toSatisfy((e) => e instanceof TroupeError && e.code === ErrorCode.STORAGE_CORRUPT);
    expect(await storage.get('outbox:x:000000000001..000000000002')).toEqual(damaged);
  });

  it('writes the deletes an acknowledgement causes with the next append, or on their own once a timer fires, not as a write of their own at once', async () => {
    const storage = countingStorage();
    const timers: Array<() => void> = [];
    const setTimer = (fn: () => void) => (timers.push(fn), () => void timers.splice(timers.indexOf(fn), 1));
    const outbox = await createOutbox({ storage, sync: false, onDurable: () => {}, setTimer });
    await Promise.all([1, 2, 3].map((i) => outbox.append('x', encodeEnvelope(testEnvelope(i)))));
    let before = storage.batches.length;
    outbox.ack('x', 3);
    await outbox.flushed('x');
    await new Promise((resolve) => setImmediate(resolve));
    expect(storage.batches.length).toBe(before);
    expect(timers).toHaveLength(1);
    // The next append takes them along: one batch, and the timer is off.
    await outbox.append('x', encodeEnvelope(testEnvelope(4)));
    expect(storage.batches.slice(before)).toHaveLength(1);
    expect(storage.batches.at(-1)!.filter((op) => op.type === 'del').map((op) => op.key)).toEqual(['outbox:x:000000000001..000000000003']);
    expect(timers).toHaveLength(0);
    // Nothing to ride with: the timer writes them.
    before = storage.batches.length;
    outbox.ack('x', 4);
    await new Promise((resolve) => setImmediate(resolve));
    expect(storage.batches.length).toBe(before);
    timers[0]!();
    await expect.poll(() => storage.batches.length).toBe(before + 1);
    expect(storage.batches.at(-1)!.map((op) => [op.type, op.key])).toEqual([['del', 'outbox:x:000000000004']]);
    await outbox.close(new Error('closed'));
  });

  it('deletes everything one acknowledgement covers with one storage batch', async () => {
    const storage = countingStorage();
    const outbox = await createOutbox({ storage, sync: false, onDurable: () => {} });
    await Promise.all(Array.from({ length: 100 }, (_, i) => outbox.append('x', encodeEnvelope(testEnvelope(i)))));
    const before = storage.batches.length;
    outbox.ack('x', 100);
    await outbox.flushed('x');
    await outbox.close(new Error('closed'));
    const after = storage.batches.slice(before);
    expect(after).toHaveLength(1);
    expect(after[0]!.filter((op) => op.type === 'del')).toHaveLength(1);
    expect(await outboxKeys(storage)).toEqual([]);
  });
});

describe('over real sockets, storage batches are per frame and per flush, not per envelope', () => {
  const open = (nodeId: string, storage: Storage, deliver: WsTransportOptions['deliver'], extra: Partial<WsTransportOptions> = {}): Promise<WsTransport> =>
    createWsTransport({ nodeId, storage, secret: SECRET, deliver, reconnectMinMs: 10, reconnectMaxMs: 200, ...extra });

  it('writes the receiver inbox at most once per incoming frame, the sender outbox a few times for 1000 sends of one tick', async () => {
    const storeA = countingStorage();
    const storeB = countingStorage();
    const atB = recorder();
    await using a = await open('a', storeA, recorder().deliver, { listen: { host: '127.0.0.1', port: 0 } });
    await using b = await open('b', storeB, atB.deliver, { peers: { a: a.address!.url } });
    const before = storeA.batches.length;
    await Promise.all(Array.from({ length: 1000 }, (_, i) => a.send('b', testEnvelope(i + 1))));
    // Sends of one tick share one batch.
    expect(touching(storeA.batches.slice(before), 'outbox:', 'put')).toHaveLength(1);
    await a.flushed('b');
    expect(atB.received.map((r) => r.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    const frames = b.stats().framesIn;
    expect(frames).toBeGreaterThanOrEqual(10);
    expect(touching(storeB.batches, 'inbox:').length).toBeLessThanOrEqual(frames);
    // Acknowledgements are per frame, and the deletes they cause share batches.
    expect(touching(storeA.batches, 'outbox:', 'del').length).toBeLessThanOrEqual(a.stats().framesIn);
  });
});

describe('the transport writes of one turn', () => {
  it('go to the storage as one batch, in the order they were asked for, and fail together', async () => {
    const storage = countingStorage();
    const writes = createMergedWrites(storage, false);
    await Promise.all([writes.write([{ type: 'put', key: 'k1', value: encode(1) }]), writes.write([{ type: 'put', key: 'k2', value: encode(2) }])]);
    expect(storage.batches.map((ops) => ops.map((op) => op.key))).toEqual([['k1', 'k2']]);
    const failing = createMergedWrites({ write: () => Promise.reject(new Error('disk gone')) }, false);
    const both = [failing.write([]), failing.write([])].map((p) => p.then(() => 'written', (e: Error) => e.message));
    expect(await Promise.all(both)).toEqual(['disk gone', 'disk gone']);
    // A storage that throws instead of rejecting fails the batches, not the process.
    const throwing = createMergedWrites({ write: () => { throw new Error('closed'); } }, false);
    await expect(throwing.write([])).rejects.toThrow('closed');
  });
});

describe('a stream of envelopes answered one by one', () => {
  // A clock that never moves unless told: held acknowledgements go out only when it does.
  const pair = async (clock: ManualClock, answer: boolean, refuse = false) => {
    const storeA = countingStorage();
    const storeB = countingStorage();
    let answered: (() => void) | undefined;
    const a = await createWsTransport({
      nodeId: 'a', storage: storeA, secret: SECRET, clock, listen: { host: '127.0.0.1', port: 0 },
      deliver: async (e) => void (e.type === 'pong' && answered?.()),
    });
    const b: WsTransport = await createWsTransport({
      nodeId: 'b', storage: storeB, secret: SECRET, clock, peers: { a: a.address!.url },
      deliver: async (e) => {
        if (refuse) throw new TroupeError(ErrorCode.UNKNOWN_ACTOR, 'nobody there');
        if (answer) await b.send('a', { ...e, id: `pong-${e.id}`, type: 'pong', from: e.to, to: e.from });
      },
    });
    const roundTrip = async (i: number) => {
      const back = new Promise<void>((resolve) => (answered = resolve));
      await a.send('b', testEnvelope(i));
      await back;
    };
    return { a, b, storeA, storeB, roundTrip, async [Symbol.asyncDispose]() { await b.close(); await a.close(); } };
  };

  it('costs the side that asks one storage write per turn: the cursor of the answer and the outbox entry of the next question', async () => {
    await using p = await pair(manualClock(Date.now()), true);
    for (let i = 1; i <= 50; i++) await p.roundTrip(i);
    const turns = p.storeA.batches.filter((ops) => ops.some((op) => op.key.startsWith('inbox:')) && ops.some((op) => op.key.startsWith('outbox:') && op.type === 'put'));
    // Each of the 49 turns after the first answer wrote the answer's cursor with the next question.
    expect(turns.length).toBeGreaterThanOrEqual(45);
    expect(touching(p.storeA.batches, 'inbox:').length + touching(p.storeA.batches, 'outbox:', 'put').length - turns.length).toBeLessThanOrEqual(56);
  });

  it('holds acknowledgements of single envelopes back until the ack delay passes, then sends one for all of them', async () => {
    const clock = manualClock(Date.now());
    await using p = await pair(clock, true);
    for (let i = 1; i <= 50; i++) await p.roundTrip(i);
    // Only the questions and the answers went out: no frame was an acknowledgement.
    expect(p.a.stats().framesOut).toBe(50);
    expect(p.b.stats().framesOut).toBe(50);
    // Every question is still held by the asking side's outbox: none was acknowledged yet.
    expect(p.a.peers().find((s) => s.nodeId === 'b')).toMatchObject({ unacked: 50, acked: 0 });
    let flushed = false;
    const both = Promise.all([p.a.flushed('b'), p.b.flushed('a')]).then(() => (flushed = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(flushed).toBe(false);
    clock.advance(5);
    await both;
    expect(p.a.stats().framesOut).toBe(51);
    expect(p.b.stats().framesOut).toBe(51);
    expect(p.a.peers().find((s) => s.nodeId === 'b')).toMatchObject({ unacked: 0, acked: 50 });
  });

  it('sends a held acknowledgement when it closes, so the peer does not resend what it has', async () => {
    await using p = await pair(manualClock(Date.now()), false);
    await p.a.send('b', testEnvelope(1));
    const flushed = p.a.flushed('b');
    while (p.b.stats().delivered < 1) await new Promise((resolve) => setImmediate(resolve));
    await p.b.close(); // the clock never moved
    await flushed;
    expect(p.a.peers().find((s) => s.nodeId === 'b')).toMatchObject({ acked: 1, unacked: 0 });
  });

  it('acknowledges at once after 100 envelopes, and at once when it refuses one', async () => {
    const clock = manualClock(Date.now());
    {
      await using p = await pair(clock, false);
      await Promise.all(Array.from({ length: 100 }, (_, i) => p.a.send('b', testEnvelope(i + 1))));
      await p.a.flushed('b'); // the clock never moved
    }
    {
      await using p = await pair(clock, false, true);
      await p.a.send('b', testEnvelope(1));
      await p.a.flushed('b');
      expect(p.a.stats().refusedByPeer).toBe(1);
    }
  });
});
