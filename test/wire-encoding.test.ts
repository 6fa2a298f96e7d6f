import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decode, encode, encodeByteArray } from '../core/codec.js';
import { encodeEnvelope, EnvelopeSchema, parseEnvelope, type Envelope } from '../core/envelope.js';
import { isTroupeError } from '../core/errors.js';
import { seededRandom } from '../core/clock.js';
import { decodeFrame, encodeBatch, encodeFrame, FrameSchema } from '../transports/frames.js';
import { createFrameSeal, deriveSessionKeys, MAC_BYTES } from '../transports/session.js';

/**
 * The hand-written encoders of the send path (a batch spliced into one buffer, an outbox
 * group, a tag written into the frame's tail) against the generic msgpack encoder, and the
 * envelope's rules, now one refinement, field by field.
 */

const EPOCH = 'ab'.repeat(16);

const envelope = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  id: 'env_1',
  from: 'run_1/a',
  to: 'run_1/b',
  type: 'task',
  payload: { n: 1 },
  seq: 0,
  ts: 1_764_633_600_000,
  ...over,
});

describe('the envelope schema', () => {
  const refused: Array<[string, Record<string, unknown>, RegExp]> = [
    ['an empty id', envelope({ id: '' }), /^invalid envelope: id: an id is 1-128 characters/],
    ['an id of 129 characters', envelope({ id: 'i'.repeat(129) }), /^invalid envelope: id: /],
    ['a sender address with a space', envelope({ from: 'run 1/a' }), /^invalid envelope: from: an address is/],
    ['a sender address of 257 characters', envelope({ from: `${'r'.repeat(128)}/${'a'.repeat(128)}` }), /^invalid envelope: from: /],
    ['a dots-only segment', envelope({ to: 'run_1/..' }), /^invalid envelope: to: /],
    ['an empty segment', envelope({ to: 'run_1//b' }), /^invalid envelope: to: /],
    ['a type starting with a digit', envelope({ type: '9task' }), /^invalid envelope: type: a message type starts with a letter/],
    ['an empty correlation id', envelope({ corr: '' }), /^invalid envelope: corr: /],
    ['a bad reply address', envelope({ replyTo: '/x' }), /^invalid envelope: replyTo: /],
    ['a negative seq', envelope({ seq: -1 }), /^invalid envelope: seq: /],
    ['a fractional seq', envelope({ seq: 1.5 }), /^invalid envelope: seq: /],
    ['a timestamp beyond the safe integers', envelope({ ts: 2 ** 53 }), /^invalid envelope: ts: /],
    ['a NaN timestamp', envelope({ ts: Number.NaN }), /^invalid envelope: ts: /],
    ['a numeric id', envelope({ id: 7 }), /^invalid envelope: id: /],
    ['a missing recipient', (({ to: _, ...rest }) => rest)(envelope()), /^invalid envelope: to: /],
    ['an unknown key', envelope({ extra: 1 }), /unrecognized/i],
  ];

  for (const [what, value, message] of refused) {
    it(`refuses ${what}, naming the field`, () => {
      let error: unknown;
      try {
        parseEnvelope(value);
      } catch (e) {
        error = e;
      }
      expect(isTroupeError(error, 'INVALID_ENVELOPE')).toBe(true);
      expect((error as Error).message).toMatch(message);
    });
  }

  it('accepts every boundary value of its rules', () => {
    const edge = envelope({
      id: 'i'.repeat(128),
      from: `${'r'.repeat(127)}/${'a'.repeat(128)}`,
      to: 'node-level.inbox',
      type: `t${'x'.repeat(127)}`,
      corr: 'c'.repeat(128),
      replyTo: 'a.b:c-d_e/f',
      seq: Number.MAX_SAFE_INTEGER,
      ts: 0,
    });
    expect(EnvelopeSchema.parse(edge)).toEqual(edge);
  });

  it('returns the envelope it checked, not a copy, and leaves it as it was', () => {
    const value = envelope({ corr: 'c1' });
    const before = structuredClone(value);
    expect(EnvelopeSchema.parse(value)).toBe(value);
    expect(parseEnvelope(value)).toBe(value);
    expect(value).toEqual(before);
  });

  it('refuses what is not a plain object: an array, a class instance, null, a string', () => {
    class Note {
      id = 'env_1';
      from = 'run_1/a';
      to = 'run_1/b';
      type = 'task';
      payload = {};
      seq = 0;
      ts = 0;
    }
    for (const value of [[envelope()], new Note(), null, 'env_1']) {
      expect(() => parseEnvelope(value)).toThrow(/^invalid envelope: envelope: an envelope is (a plain )?(an )?object/);
    }
    // One without a prototype, as some decoders make them, is still an envelope.
    expect(parseEnvelope(Object.assign(Object.create(null) as object, envelope()))).toMatchObject({ id: 'env_1' });
  });

  it('names the first field a frame’s envelope breaks, by its place in the frame', () => {
    const good = encodeEnvelope(envelope() as Envelope);
    const bad = encode(envelope({ to: 'run_1/..' }));
    expect(() => decodeFrame(encodeBatch(EPOCH, [{ seq: 1, bytes: good }, { seq: 2, bytes: bad }]), 1 << 20)).toThrow(/^invalid frame: items\.1\.envelope\.to: an address is/);
  });
});

describe('a batch spliced into one buffer', () => {
  const seqSets = [
    [1],
    Array.from({ length: 15 }, (_, i) => i + 1),
    Array.from({ length: 16 }, (_, i) => i + 1),
    [127, 128, 255, 256, 65_535, 65_536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER],
  ];

  it('decodes to what the generic encoder of the same frame decodes to', () => {
    for (const seqs of seqSets) {
      const items = seqs.map((seq) => ({ seq, envelope: envelope({ id: `e${seq}`, payload: 'p'.repeat(seq % 300) }) as Envelope }));
      const spliced = encodeBatch(EPOCH, items.map(({ seq, envelope: e }) => ({ seq, bytes: encodeEnvelope(e) })));
      const generic = encodeFrame({ t: 'batch', epoch: EPOCH, items });
      expect(decode(spliced)).toEqual(decode(generic));
      expect(decodeFrame(spliced, 1 << 20)).toEqual({ t: 'batch', epoch: EPOCH, items });
    }
  });

  it('leaves room for the tag, and a tag written there equals the tag appended', () => {
    const keys = deriveSessionKeys(randomBytes(32), 'a', 'b', randomBytes(16).toString('hex'), randomBytes(16).toString('hex'));
    const appended = createFrameSeal(keys, 'client');
    const tailed = createFrameSeal(keys, 'client');
    const reader = createFrameSeal(keys, 'server');
    for (const seqs of seqSets) {
      const items = seqs.map((seq) => ({ seq, bytes: encodeEnvelope(envelope({ id: `e${seq}` }) as Envelope) }));
      const plain = encodeBatch(EPOCH, items);
      const room = encodeBatch(EPOCH, items, MAC_BYTES);
      expect(room.byteLength).toBe(plain.byteLength + MAC_BYTES);
      const sealed = tailed.sealTail(room);
      expect(Buffer.from(sealed).equals(appended.seal(plain))).toBe(true);
      expect(Buffer.from(reader.open(sealed)!).equals(plain)).toBe(true);
    }
    expect(() => tailed.sealTail(Buffer.alloc(MAC_BYTES - 1))).toThrow(TypeError);
  });

  it('refuses a frame whose seqs are not positive integers or do not increase, naming the item', () => {
    const item = (seq: number) => ({ seq, envelope: envelope() });
    const cases: Array<[number[], RegExp]> = [
      [[0], /items\.0\.seq: a sequence number is a positive integer/],
      [[1, 2.5], /items\.1\.seq: a sequence number is a positive integer/],
      [[3, 3], /items\.1\.seq: sequence numbers must increase/],
      [[2 ** 53], /items\.0\.seq: a sequence number is a positive integer/],
    ];
    for (const [seqs, message] of cases) {
      expect(() => decodeFrame(encodeFrame({ t: 'batch', epoch: EPOCH, items: seqs.map(item) }), 1 << 20)).toThrow(message);
    }
  });
  it('refuses a batch whose items are not a list of 1-1000 plain { seq, envelope } objects, naming the item', () => {
    const item = (seq: number) => ({ seq, envelope: envelope() });
    const cases: Array<[unknown, RegExp]> = [
      ['not a list', /^invalid frame: items: items is an array/],
      [[], /^invalid frame: items: a batch holds 1-1000 items/],
      [Array.from({ length: 1001 }, (_, i) => item(i + 1)), /^invalid frame: items: a batch holds 1-1000 items/],
      [[item(1), 'envelope'], /^invalid frame: items\.1: an item is a plain object/],
      [[item(1), null], /^invalid frame: items\.1: an item is a plain object/],
      [[{ ...item(1), extra: true }], /^invalid frame: items\.0: unrecognized key "extra"/],
      [[{ seq: 1 }], /^invalid frame: items\.0\.envelope: an envelope is an object/],
      [[item(1), { seq: 2, envelope: { ...envelope(), secret: 1 } }], /^invalid frame: items\.1\.envelope: unrecognized key "secret"/],
    ];
    for (const [items, message] of cases) {
      expect(() => decodeFrame(encodeFrame({ t: 'batch', epoch: EPOCH, items }), 1 << 20)).toThrow(message);
    }
    // The largest batch allowed passes, and parsing hands back the decoded items themselves.
    const frame = decodeFrame(encodeFrame({ t: 'batch', epoch: EPOCH, items: Array.from({ length: 1000 }, (_, i) => item(i + 1)) }), 1 << 20);
    expect(frame.t === 'batch' && frame.items.length).toBe(1000);
  });
});

describe('a received frame', () => {
  // decodeFrame takes a batch that breaks no rule without running the schema; anything else
  // goes through it. This holds it to the schema: on seeded mutations of a valid batch, it
  // takes exactly the frames FrameSchema takes, and hands back what the schema would.
  it('is taken by decodeFrame exactly when FrameSchema takes it, whatever is mutated', () => {
    const random = seededRandom(0xf4a3e);
    const int = (n: number) => Math.floor(random() * n);
    const odd = (): unknown => [undefined, null, 0, -1, 1.5, '', 'x', 'BATCH', [], {}, 2 ** 53, true, 'ab'.repeat(8), 'AB'.repeat(8), 'ab'.repeat(33)][int(15)];
    const mutate = (frame: Record<string, unknown>): Record<string, unknown> => {
      const items = (frame.items as Array<Record<string, unknown>>).map((item): Record<string, unknown> => ({ ...item, envelope: { ...(item.envelope as object) } }));
      const out: Record<string, unknown> = { ...frame, items };
      for (let k = int(3); k >= 0; k--) {
        const at = items[int(items.length)];
        switch (int(9)) {
          case 0: out.t = odd(); break;
          case 1: out.epoch = odd(); break;
          case 2: out[['extra', 'seq', 'upTo', '__proto__', 'constructor'][int(5)]!] = odd(); break;
          case 3: delete out[['t', 'epoch', 'items'][int(3)]!]; break;
          case 4: if (at) at.seq = odd(); break;
          case 5: if (at) at[['extra', 'envelope', 'seq'][int(3)]!] = odd(); break;
          case 6: if (at && typeof at.envelope === 'object' && at.envelope !== null) (at.envelope as Record<string, unknown>)[['id', 'from', 'to', 'type', 'seq', 'ts', 'corr', 'secret'][int(8)]!] = odd(); break;
          case 7: out.items = [odd(), items, items.slice(0, 0), [...items, ...items]][int(4)]; break;
          default: break; // some stay valid
        }
      }
      return out;
    };
    let taken = 0;
    let refused = 0;
    for (let n = 0; n < 3000; n++) {
      const count = 1 + int(5);
      const valid = { t: 'batch', epoch: 'ab'.repeat(8 + int(25)), items: Array.from({ length: count }, (_, i) => ({ seq: 1 + i * (1 + int(3)), envelope: envelope({ id: `e${i}` }) })) };
      const bytes = encodeFrame(n % 10 === 0 ? valid : mutate(valid));
      const expected = FrameSchema.safeParse(decode(bytes));
      let got: unknown;
      try {
        got = decodeFrame(bytes, 1 << 20);
      } catch (error) {
        expect(isTroupeError(error, 'INVALID_ENVELOPE'), String(error)).toBe(true);
        got = undefined;
      }
      expect(got !== undefined, `frame ${n}: ${JSON.stringify(decode(bytes)).slice(0, 300)}`).toBe(expected.success);
      if (expected.success) expect(got).toEqual(expected.data);
      got === undefined ? refused++ : taken++;
    }
    // Both ways, many times: the generator does reach both.
    expect(taken).toBeGreaterThan(300);
    expect(refused).toBeGreaterThan(1000);
  });
});

describe('an outbox group encoded into one buffer', () => {
  it('is byte for byte what the generic encoder writes, at every length boundary of msgpack', () => {
    for (const count of [0, 1, 15, 16, 300]) {
      for (const size of [0, 1, 255, 256, 65_535, 65_536]) {
        if (count * size > 4_000_000) continue;
        const parts = Array.from({ length: count }, () => new Uint8Array(randomBytes(size)));
        expect(Buffer.from(encodeByteArray(parts)).equals(Buffer.from(encode(parts)))).toBe(true);
      }
    }
    const many = Array.from({ length: 70_000 }, (_, i) => Uint8Array.of(i & 0xff));
    expect(Buffer.from(encodeByteArray(many)).equals(Buffer.from(encode(many)))).toBe(true);
  });
});
