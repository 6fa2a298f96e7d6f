import { once } from 'node:events';
import { Packr } from 'msgpackr';
import { expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { encodeEnvelope, EnvelopeSchema, type Envelope } from '../core/envelope.js';
import { memoryStorage } from '../storage/memory.js';
import { encodeAck, encodeBatch, secretKey } from '../transports/index.js';
import { sealedClient } from './helpers/sealed-client.js';
import { createWsTransport } from '../transports/ws.js';
import { recorder, testEnvelope } from '../testing/transport-conformance.js';
import { seededRandom } from '../core/clock.js';

/**
 * Feeds a bounded number of random and mutated frames (seeded, reproducible with
 * FUZZ_SEED=<n>) over an authenticated connection. The listener must never deliver an
 * invalid envelope, never break per-sender order, and keep serving well-behaved peers.
 */

const SEED = Number(process.env.FUZZ_SEED ?? 0x7a05e);
const FRAMES = 2000;
const SECRET = 'fuzz-test-secret-0123456789abcdef';
const packr = new Packr({ useRecords: false, structuredClone: false, variableMapSize: true });
// msgpackr looks at `value.constructor` to pick an encoding, so objects with a random own
// `constructor` key can fail to encode here, on the fuzzer's side; send noise instead.
const pack = (value: unknown) => {
  try {
    return packr.pack(value);
  } catch {
    return Uint8Array.of(0x82, 0xa1, 0x74, 0xc0);
  }
};

/** A seeded source with the helpers the mutations need. */
function prng(seed: number) {
  const next = seededRandom(seed);
  const int = (n: number) => Math.floor(next() * n);
  return { next, int, pick: <T>(items: readonly T[]): T => items[int(items.length)]! };
}
type Rng = ReturnType<typeof prng>;

const KEYS = ['t', 'epoch', 'items', 'seq', 'envelope', 'upTo', 'id', 'from', 'to', 'type', 'payload', 'corr', 'replyTo', 'ts', '__proto__', 'constructor', ''];

function randomValue(rng: Rng, depth = 0): unknown {
  switch (rng.int(depth > 3 ? 6 : 9)) {
    case 0: return null;
    case 1: return rng.next() < 0.5;
    case 2: return rng.pick([0, -1, 1, 2 ** 31, 2 ** 53, -(2 ** 63), 1.5, Number.NaN, Infinity, rng.int(1000)]);
    case 3: return rng.pick(['', 'batch', 'ack', 'a'.repeat(rng.int(300)), '💥', 'run_b/receiver', 'f0'.repeat(8), '\u0000']);
    case 4: return Uint8Array.from({ length: rng.int(16) }, () => rng.int(256));
    case 5: return rng.int(2 ** 30);
    case 6: return Array.from({ length: rng.int(5) }, () => randomValue(rng, depth + 1));
    default: return Object.fromEntries(Array.from({ length: rng.int(5) }, () => [rng.pick(KEYS), randomValue(rng, depth + 1)]));
  }
}

function validEnvelope(rng: Rng, i: number): Envelope {
  const payload = rng.next() < 0.5 ? { i } : randomValue(rng);
  return testEnvelope(i, { payload, ...(rng.next() < 0.3 ? { corr: `c${i}`, replyTo: 'run_a/sender' } : {}) });
}

/** A frame somewhere between perfectly valid and pure noise. */
function generate(rng: Rng, state: { seq: number; epoch: string }): Uint8Array {
  const validBatch = () => {
    const items = Array.from({ length: 1 + rng.int(5) }, () => ({ seq: ++state.seq, bytes: encodeEnvelope(validEnvelope(rng, state.seq)) }));
    return encodeBatch(state.epoch, items);
  };
  switch (rng.int(8)) {
    case 0:
      return validBatch();
    case 1:
    case 2: {
      // mutate a valid batch: flip, overwrite, truncate, splice in or cut out bytes
      let bytes = Buffer.from(validBatch());
      for (let m = 1 + rng.int(4); m > 0; m--) {
        const at = rng.int(bytes.length);
        const op = rng.int(5);
        if (op === 0) bytes[at] = bytes[at]! ^ (1 << rng.int(8));
        else if (op === 1) bytes[at] = rng.int(256);
        else if (op === 2) bytes = bytes.subarray(0, at);
        else if (op === 3) bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from(Array.from({ length: 1 + rng.int(8) }, () => rng.int(256))), bytes.subarray(at)]);
        else bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1 + rng.int(8))]);
      }
      return bytes;
    }
    case 3: {
      // plausible shapes with one wrong part
      const envelope: Record<string, unknown> = { ...validEnvelope(rng, state.seq + 1) };
      envelope[rng.pick(KEYS)] = randomValue(rng);
      const seq = rng.pick([state.seq + 1, 0, -1, 1.5, 2 ** 60, rng.int(10)]);
      return pack(rng.pick([
        { t: 'batch', epoch: state.epoch, items: [{ seq, envelope }] },
        { t: 'batch', epoch: randomValue(rng), items: [] },
        { t: 'ack', epoch: state.epoch, upTo: randomValue(rng) },
        { t: randomValue(rng), epoch: state.epoch },
      ]));
    }
    case 4:
      return pack(randomValue(rng));
    case 5:
      return Uint8Array.from({ length: rng.int(512) }, () => rng.int(256));
    case 6:
      // hostile headers: huge declared lengths, deep nesting, extension types
      return rng.pick([
        Uint8Array.of(0xdd, 0xff, 0xff, 0xff, 0xff, 0x01),
        Uint8Array.of(0xdf, 0x7f, 0xff, 0xff, 0xff, 0xa1, 0x74),
        Uint8Array.of(0xdb, 0xff, 0xff, 0xff, 0xf0, 0x61),
        Uint8Array.of(0xc6, 0x7f, 0xff, 0xff, 0xff),
        new Uint8Array(5000).fill(0x91),
        Uint8Array.of(0xd6, 0xff, 0, 0, 0, 1),
        Uint8Array.of(0xc7, 0x02, 0x65, 0x91, 0xc0),
        Uint8Array.of(0xd4, 0x72, 0x00),
        new Uint8Array(0),
      ]);
    default:
      return encodeAck(state.epoch, rng.int(1000)); // acks for an outbox the listener never had
  }
}

it(`survives ${FRAMES} random and mutated frames (seed ${SEED}) and keeps serving`, async () => {
  const at = recorder();
  let invalid = 0;
  const check = at.deliver;
  const deliver: typeof check = async (envelope, from, receipt) => {
    if (!EnvelopeSchema.safeParse(envelope).success) invalid++;
    await check(envelope, from, receipt);
  };
  await using a = await createWsTransport({ nodeId: 'a', storage: memoryStorage(), secret: SECRET, deliver, listen: { host: '127.0.0.1', port: 0 }, maxPayload: 64 * 1024 });
  const key = secretKey(SECRET);
  // Sealed with the connection's keys: the fuzz reaches the frame decoder, not just the tag check.
  const connect = () => sealedClient(a.address!.url, key, 'fuzz', 'a');
  // A ping after each frame is a barrier: its pong comes back only once the frame was read.
  const settle = (client: WebSocket) =>
    new Promise<'open' | 'closed'>((resolve) => {
      const onPong = () => (client.off('close', onClose), resolve('open'));
      const onClose = () => (client.off('pong', onPong), resolve('closed'));
      client.once('pong', onPong);
      client.once('close', onClose);
      client.ping();
    });

  const rng = prng(SEED);
  const state = { seq: 0, epoch: 'f0'.repeat(8) };
  let client = await connect();
  let closings = 0;
  for (let n = 0; n < FRAMES; n++) {
    if (client.ws.readyState !== WebSocket.OPEN) client = await connect();
    client.send(generate(rng, state));
    if ((await settle(client.ws)) === 'closed') closings++;
  }
  client.ws.close();

  // Well-behaved peers, including one reusing the fuzzer's node id, are still served.
  await using good = await createWsTransport({ nodeId: 'good', storage: memoryStorage(), secret: SECRET, deliver: async () => {}, peers: { a: a.address!.url } });
  await using honest = await createWsTransport({ nodeId: 'fuzz', storage: memoryStorage(), secret: SECRET, deliver: async () => {}, peers: { a: a.address!.url } });
  for (let i = 0; i < 20; i++) await Promise.all([good.send('a', testEnvelope(10_000 + i)), honest.send('a', testEnvelope(20_000 + i))]);
  await Promise.all([good.flushed('a'), honest.flushed('a')]);

  const stats = a.stats();
  expect(a.status).toBe('open');
  expect(invalid).toBe(0);
  expect(closings).toBeGreaterThan(FRAMES / 4);
  expect(stats.closed.malformed + stats.closed.oversized).toBe(closings);
  expect(stats.delivered).toBeGreaterThan(0);
  const fromGood = at.received.filter((r) => r.from === 'good').map((r) => r.envelope.id);
  expect(fromGood).toEqual(Array.from({ length: 20 }, (_, i) => `env_${10_000 + i}`));
  expect(at.received.filter((r) => r.from === 'fuzz').slice(-20).map((r) => r.envelope.id)).toEqual(Array.from({ length: 20 }, (_, i) => `env_${20_000 + i}`));
  // Per-sender order: sequence numbers only go down when the sender's epoch changed.
  const fuzzSeqs = at.received.filter((r) => r.from === 'fuzz').map((r) => r.seq);
  const drops = fuzzSeqs.filter((seq, i) => i > 0 && seq <= fuzzSeqs[i - 1]!).length;
  expect(drops).toBeLessThanOrEqual(stats.epochResets);
});

