/**
 * The conformance suite every `Transport` must pass, with the helpers its cases use. Runner
 * independent: see {@link TestRegistrar}.
 * @module
 */
import assert from 'node:assert/strict';
import { encodeEnvelope, EnvelopeSchema, type Envelope } from '../core/envelope.js';
import { ErrorCode, isTroupeError, TroupeError } from '../core/errors.js';
import type { DeliverFn, DeliveryReceipt, Transport } from '../transports/index.js';
import { assertFields, type TestRegistrar } from './suite.js';

/** One envelope as a receiver saw it. */
export interface Received {
  envelope: Envelope;
  from: string;
  seq: number;
}

/** A deliver function that records what it gets and lets a test wait for a count. */
export interface Recorder {
  deliver: DeliverFn;
  received: Received[];
  /**
   * What was wrong with the receipts of delivered envelopes: a `checkedWithin` on an envelope
   * that is not valid, or is larger than that bound (a node would take it unparsed). Empty
   * for a sound transport.
   */
  unsound: string[];
  /** Resolves once `count` envelopes arrived in total. */
  until(count: number): Promise<void>;
  /** Replaces the behaviour of the next calls (throw to refuse); return `undefined` to accept. */
  intercept?: (envelope: Envelope, receipt: DeliveryReceipt) => Promise<void> | void;
}

/** Creates a {@link Recorder}. */
export function recorder(): Recorder {
  const waiters: Array<{ count: number; resolve(): void }> = [];
  const rec: Recorder = {
    received: [],
    unsound: [],
    async deliver(envelope, from, receipt) {
      if (receipt.checkedWithin !== undefined) {
        const checked = EnvelopeSchema.safeParse(envelope);
        if (!checked.success) rec.unsound.push(`seq ${receipt.seq}: checkedWithin set on an invalid envelope`);
        else if (encodeEnvelope(envelope).byteLength > receipt.checkedWithin) rec.unsound.push(`seq ${receipt.seq}: the envelope is larger than checkedWithin (${receipt.checkedWithin})`);
      }
      await rec.intercept?.(envelope, receipt);
      rec.received.push({ envelope, from, seq: receipt.seq });
      for (const w of [...waiters]) {
        if (rec.received.length >= w.count) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    },
    until(count) {
      if (rec.received.length >= count) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ count, resolve }));
    },
  };
  return rec;
}

/** A test envelope; `i` makes id and payload unique. */
export function testEnvelope(i: number, overrides: Partial<Envelope> = {}): Envelope {
  return { id: `env_${i}`, from: 'run_a/sender', to: 'run_b/receiver', type: 'note', payload: { i, text: `message ${i}` }, seq: 0, ts: 1_700_000_000_000 + i, ...overrides };
}

/** Two connected transports `a` and `b`, each delivering into the given functions. */
export interface TransportPair {
  a: Transport;
  b: Transport;
  /** Closes both transports and whatever else the factory opened. */
  close(): Promise<void>;
}

/** Opens a fresh pair; `a` and `b` must be able to send to each other by node id. */
export type TransportPairFactory = (deliver: { a: DeliverFn; b: DeliverFn }) => Promise<TransportPair>;

/**
 * The behaviour every {@link Transport} must have: durable send, per-pair order, delivery
 * with the authenticated sender, retries on transient refusals, dead letters on permanent
 * ones, and a clean close. Registers its cases with `test` (vitest's, jest's or node:test's
 * `describe`, `it` and `afterEach`).
 */
export function transportConformance(name: string, open: TransportPairFactory, test: TestRegistrar): void {
  const { describe, it, afterEach } = test;
  describe(`${name} transport conformance`, () => {
    let pair: TransportPair | undefined;
    let atA: Recorder;
    let atB: Recorder;
    const start = async () => {
      atA = recorder();
      atB = recorder();
      pair = await open({ a: atA.deliver, b: atB.deliver });
      return pair;
    };
    afterEach(async () => {
      await pair?.close();
      pair = undefined;
    });

    it('delivers in both directions with the sender node and resolves flushed after delivery', async () => {
      const { a, b } = await start();
      await a.send(b.nodeId, testEnvelope(1));
      await a.flushed(b.nodeId);
      assert.deepStrictEqual(atB.received, [{ envelope: testEnvelope(1), from: a.nodeId, seq: 1 }]);
      await b.send(a.nodeId, testEnvelope(2, { from: 'run_b/receiver', to: 'run_a/sender' }));
      await b.flushed(a.nodeId);
      assert.deepStrictEqual(atA.received.map((r) => [r.envelope.id, r.from]), [['env_2', b.nodeId]]);
      assertFields(a.peers().find((p) => p.nodeId === b.nodeId), { unacked: 0, assigned: 1, acked: 1 }, 'peer b as a sees it');
    });

    it('keeps per-pair order of 500 envelopes sent at once, numbering them 1..500', async () => {
      const { a, b } = await start();
      await Promise.all(Array.from({ length: 500 }, (_, i) => a.send(b.nodeId, testEnvelope(i))));
      await a.flushed(b.nodeId);
      assert.deepStrictEqual(atB.received.map((r) => r.envelope.id), Array.from({ length: 500 }, (_, i) => `env_${i}`));
      assert.deepStrictEqual(atB.received.map((r) => r.seq), Array.from({ length: 500 }, (_, i) => i + 1));
    });

    it('vouches in a receipt (checkedWithin) only for a valid envelope within that many bytes', async () => {
      const { a, b } = await start();
      // Payloads from a few bytes to 64 KiB: a bound taken from the wrong frame shows up here.
      const sizes = [0, 10, 1_000, 20_000, 65_536, 3, 40_000];
      await Promise.all(sizes.map((n, i) => a.send(b.nodeId, testEnvelope(i, { payload: 'p'.repeat(n) }))));
      await a.flushed(b.nodeId);
      assert.equal(atB.received.length, sizes.length);
      assert.deepStrictEqual(atB.unsound, []);
    });

    it('retries after a transient refusal and still delivers each envelope once, in order', async () => {
      const { a, b } = await start();
      let failures = 0;
      atB.intercept = (envelope) => {
        if (envelope.id === 'env_3' && failures++ < 2) throw new Error('mailbox busy');
      };
      for (let i = 0; i < 6; i++) await a.send(b.nodeId, testEnvelope(i));
      await a.flushed(b.nodeId);
      assert.equal(failures, 3);
      assert.deepStrictEqual(atB.received.map((r) => r.envelope.id), ['env_0', 'env_1', 'env_2', 'env_3', 'env_4', 'env_5']);
    });

    it('drops an envelope refused for good (UNKNOWN_ACTOR) without stalling the ones after it', async () => {
      const { a, b } = await start();
      atB.intercept = (envelope) => {
        if (envelope.id === 'env_1') throw new TroupeError(ErrorCode.UNKNOWN_ACTOR, 'no such actor');
      };
      for (let i = 0; i < 3; i++) await a.send(b.nodeId, testEnvelope(i));
      await a.flushed(b.nodeId);
      assert.deepStrictEqual(atB.received.map((r) => r.envelope.id), ['env_0', 'env_2']);
    });

    it('refuses invalid envelopes and sending to itself before persisting anything', async () => {
      const { a, b } = await start();
      await assert.rejects(a.send(b.nodeId, { ...testEnvelope(1), type: '1bad type' }), (e: unknown) => isTroupeError(e, 'INVALID_ENVELOPE') && /type/.test((e as Error).message));
      await assert.rejects(a.send(b.nodeId, { ...testEnvelope(1), extra: true } as Envelope), (e: unknown) => isTroupeError(e, 'INVALID_ENVELOPE'));
      await assert.rejects(a.send(a.nodeId, testEnvelope(1)), TypeError);
      await assert.rejects(a.send('bad/node', testEnvelope(1)), TypeError);
      await a.send(b.nodeId, testEnvelope(2));
      assertFields(a.peers().find((p) => p.nodeId === b.nodeId), { assigned: 1 }, 'peer b as a sees it');
    });

    // `reserve` is optional: a transport without it passes these two as they are.
    it('sends an envelope taken through reserve after the sends numbered before it, even when its batch commits before their write is done', async () => {
      const { a, b } = await start();
      if (!a.reserve) return;
      const first = a.send(b.nodeId, testEnvelope(1)); // numbered 1, its write under way
      const reserved = a.reserve(b.nodeId, testEnvelope(2));
      assert.ok(reserved, 'reserve took the envelope');
      // The caller's batch (where `reserved.ops` go) is durable: commit before send 1's write
      // is. Sent at once, seq 2 would arrive first and seq 1 be dropped as already seen.
      reserved.commit();
      await first;
      await a.flushed(b.nodeId);
      assert.deepStrictEqual(atB.received.map((r) => [r.envelope.id, r.seq]), [['env_1', 1], ['env_2', 2]]);
    });

    it('skips an aborted reservation: the sends numbered after it are delivered, in order', async () => {
      const { a, b } = await start();
      if (!a.reserve) return;
      const reserved = a.reserve(b.nodeId, testEnvelope(1));
      assert.ok(reserved, 'reserve took the envelope');
      const later = [a.send(b.nodeId, testEnvelope(2)), a.send(b.nodeId, testEnvelope(3))];
      reserved.abort(); // the caller's batch failed: the envelope does not exist
      await Promise.all(later);
      await a.flushed(b.nodeId);
      assert.deepStrictEqual(atB.received.map((r) => r.envelope.id), ['env_2', 'env_3']);
    });

    it('closes idempotently; afterwards sends fail with NODE_CLOSED and waiters are released', async () => {
      const { a, b } = await start();
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      atB.intercept = () => gate; // holds the envelope: nothing is acknowledged yet
      await a.send(b.nodeId, testEnvelope(1));
      const waiting = a.flushed(b.nodeId);
      const closing = Promise.all([a.close(), a.close()]);
      await assert.rejects(waiting, (e: unknown) => isTroupeError(e, 'NODE_CLOSED'));
      await closing;
      assert.equal(a.status, 'closed');
      await assert.rejects(a.send(b.nodeId, testEnvelope(2)), (e: unknown) => isTroupeError(e, 'NODE_CLOSED'));
      release(); // a transport's close waits for the delivery it has in flight
    });
  });
}
