import { z } from 'zod';
import { arrayHeaderBytes, decode, encode, writeArrayHeader } from '../core/codec.js';
import { envelopeIssue, type Envelope, type EnvelopeSchema } from '../core/envelope.js';
import { ErrorCode, TroupeError } from '../core/errors.js';

/**
 * The wire format between two nodes: one msgpack map per WebSocket binary message.
 * - `{ t: 'batch', epoch, items: [{ seq, envelope }, …] }` envelopes in sender order
 * - `{ t: 'ack', epoch, upTo, refused? }` the receiver durably holds every seq ≤ `upTo` of
 *   `epoch`; those in `refused` it refused for good (dead letters), so they are not resent
 * - `{ t: 'hello' }` the dialling node's first frame: sealed with the connection's keys, it
 *   answers the listener's challenge (transports/auth.ts)
 * Every message on the wire is one of these followed by its tag (transports/session.ts).
 * The sender's identity is not in the frame: it is the node authenticated at the handshake.
 */

/** Most items one batch may carry, whatever the sender's `batchMaxEnvelopes`. */
export const MAX_BATCH_ITEMS = 1000;

/** Bytes a batch adds around its envelopes, at most (map keys, epoch, seq numbers). */
export const BATCH_OVERHEAD_BYTES = 128;
/** Bytes each item adds around its envelope, at most. */
export const ITEM_OVERHEAD_BYTES = 24;

const EPOCH = /^[0-9a-f]{16,64}$/;
/** An outbox incarnation: random hex, new whenever a sender's storage starts empty. */
export const EpochSchema = z.string().regex(EPOCH);

/** A per-pair sequence number: a positive safe integer. */
const isSeq = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) > 0;
const SEQ_RULE = 'a sequence number is a positive integer';
const SeqSchema = z.number().refine(isSeq, SEQ_RULE);

/** One envelope of a batch with its per-pair sequence number. */
export interface BatchFrameItem {
  seq: number;
  envelope: Envelope;
}

/**
 * The first rule a batch's `items` break, with the path inside `items`, or `undefined`: one
 * pass over up to a thousand items, allocating nothing. A zod object per item (and its
 * result) cost a receiver about 1.5 us per envelope, more than decoding it.
 */
function itemsIssue(items: unknown): { path: (string | number)[]; message: string } | undefined {
  if (!Array.isArray(items)) return { path: [], message: 'items is an array' };
  if (items.length < 1 || items.length > MAX_BATCH_ITEMS) return { path: [], message: `a batch holds 1-${MAX_BATCH_ITEMS} items` };
  let previous = 0;
  for (let i = 0; i < items.length; i++) {
    const item: unknown = items[i];
    if (typeof item !== 'object' || item === null || Object.getPrototypeOf(item) !== Object.prototype) return { path: [i], message: 'an item is a plain object' };
    for (const key in item) if (key !== 'seq' && key !== 'envelope') return { path: [i], message: `unrecognized key "${key.slice(0, 64)}"` };
    const { seq, envelope } = item as { seq?: unknown; envelope?: unknown };
    // Positive and strictly increasing: a resent frame or a spliced one cannot go back.
    if (!isSeq(seq)) return { path: [i, 'seq'], message: SEQ_RULE };
    if (seq <= previous) return { path: [i, 'seq'], message: 'sequence numbers must increase' };
    previous = seq;
    const issue = envelopeIssue(envelope);
    if (issue) return { path: issue.path === undefined ? [i, 'envelope'] : [i, 'envelope', issue.path], message: issue.message };
  }
  return undefined;
}

/** A batch's items as zod sees them: {@link itemsIssue}, the value itself as the result. */
const BatchItemsSchema = z.unknown().superRefine((items, ctx) => {
  const issue = itemsIssue(items);
  if (issue) ctx.addIssue({ code: 'custom', path: issue.path, message: issue.message, input: items });
}) as unknown as z.ZodType<BatchFrameItem[]>;

/**
 * A batch of envelopes with their per-pair sequence numbers, positive and strictly
 * increasing, each envelope following {@link EnvelopeSchema}'s rule.
 */
export const BatchFrameSchema = z.strictObject({
  t: z.literal('batch'),
  epoch: EpochSchema,
  items: BatchItemsSchema,
});

/** The receiver's cumulative acknowledgement, naming the seqs of the batch it refused for good. */
export const AckFrameSchema = z.strictObject({
  t: z.literal('ack'),
  epoch: EpochSchema,
  upTo: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  refused: z.array(SeqSchema).max(MAX_BATCH_ITEMS).optional(),
});

/** The dialling node's proof of the session keys, its first frame. */
export const HelloFrameSchema = z.strictObject({ t: z.literal('hello') });

/** Every frame a peer may send. */
export const FrameSchema = z.discriminatedUnion('t', [BatchFrameSchema, AckFrameSchema, HelloFrameSchema]);

/** A decoded, validated frame. */
export type Frame = z.infer<typeof FrameSchema>;
/** A decoded, validated batch. */
export type BatchFrame = z.infer<typeof BatchFrameSchema>;

/**
 * Decodes and validates one frame from a peer. Anything else becomes a `TroupeError`
 * (`FRAME_TOO_LARGE` or `INVALID_ENVELOPE`); nothing here throws otherwise.
 */
export function decodeFrame(bytes: Uint8Array, maxBytes: number): Frame {
  // Untrusted bytes: the codec's decoder (plain maps and arrays only), bounded first.
  const value = decode(bytes, maxBytes);
  // A batch that breaks no rule is taken as it is, checked by the schema's rule written out:
  // zod's schema took ~1.7 µs an envelope of a frame of 100, and ~9 µs more of a frame of one
  // after an idle (both sides of every round trip). Anything else, or a batch that breaks a
  // rule, goes through the schema, for its result or its issue.
  if (isBatch(value)) return value;
  const result = FrameSchema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue?.path.length ? issue.path.join('.') : 'frame';
    throw new TroupeError(ErrorCode.INVALID_ENVELOPE, `invalid frame: ${where}: ${issue?.message ?? 'malformed'}`, { cause: result.error, details: { path: where } });
  }
  return result.data;
}

/** {@link BatchFrameSchema}'s rule without zod: a plain object of `t`, `epoch` and `items` only, each valid. */
function isBatch(value: unknown): value is BatchFrame {
  if (typeof value !== 'object' || value === null || Object.getPrototypeOf(value) !== Object.prototype) return false;
  for (const key in value) if (key !== 't' && key !== 'epoch' && key !== 'items') return false;
  const { t, epoch, items } = value as { t?: unknown; epoch?: unknown; items?: unknown };
  return t === 'batch' && typeof epoch === 'string' && EPOCH.test(epoch) && itemsIssue(items) === undefined;
}

/** One outbox entry as it goes on the wire: the envelope stays in its stored msgpack bytes. */
export interface BatchItem {
  seq: number;
  bytes: Uint8Array;
}

const K_T = encode('t');
const V_BATCH = encode('batch');
const K_EPOCH = encode('epoch');
const K_ITEMS = encode('items');
const K_SEQ = encode('seq');
const K_ENVELOPE = encode('envelope');
// A batch's fixed head: `{ t: 'batch', epoch: <epoch>, items: [` (the epoch is spliced in).
const HEAD = Buffer.concat([Uint8Array.of(0x83), K_T, V_BATCH, K_EPOCH]);
// Each item's head: `{ seq: <seq>, envelope: <envelope>` (the seq is written in place).
const ITEM_HEAD = Buffer.concat([Uint8Array.of(0x82), K_SEQ]);

/** Bytes of a seq in msgpack: fixint, uint8/16/32, or a float64 for the rest of the safe integers. */
function seqBytes(n: number): number {
  return n < 0x80 ? 1 : n <= 0xff ? 2 : n <= 0xffff ? 3 : n <= 0xffffffff ? 5 : 9;
}

function writeSeq(buffer: Buffer, at: number, n: number): number {
  if (n < 0x80) return buffer.writeUInt8(n, at);
  if (n <= 0xff) return buffer.writeUInt8(n, buffer.writeUInt8(0xcc, at));
  if (n <= 0xffff) return buffer.writeUInt16BE(n, buffer.writeUInt8(0xcd, at));
  if (n <= 0xffffffff) return buffer.writeUInt32BE(n, buffer.writeUInt8(0xce, at));
  return buffer.writeDoubleBE(n, buffer.writeUInt8(0xcb, at));
}

/**
 * Encodes a batch by splicing the stored envelope bytes into the frame (a msgpack map
 * value is just the next encoded value), so envelopes are encoded once, when sent. The frame
 * is written into one buffer sized up front, with `tailBytes` of room after it for the
 * sender's tag ({@link FrameSeal.sealTail}): a frame of a hundred envelopes is then copied
 * once, not once per part and again for the tag.
 */
export function encodeBatch(epoch: string, items: readonly BatchItem[], tailBytes = 0): Buffer {
  if (items.length === 0 || items.length > MAX_BATCH_ITEMS) throw new TypeError(`a batch holds 1-${MAX_BATCH_ITEMS} items, not ${items.length}`);
  const epochBytes = encode(epoch);
  let size = HEAD.byteLength + epochBytes.byteLength + K_ITEMS.byteLength + arrayHeaderBytes(items.length) + tailBytes;
  for (const item of items) size += ITEM_HEAD.byteLength + seqBytes(item.seq) + K_ENVELOPE.byteLength + item.bytes.byteLength;
  const buffer = Buffer.allocUnsafe(size);
  buffer.set(HEAD, 0);
  let at = HEAD.byteLength;
  buffer.set(epochBytes, at);
  at += epochBytes.byteLength;
  buffer.set(K_ITEMS, at);
  at += K_ITEMS.byteLength;
  at = writeArrayHeader(buffer, at, items.length);
  for (const item of items) {
    // The two fixed heads byte by byte: a `set` call each cost more than copying the envelope.
    for (let k = 0; k < ITEM_HEAD.length; k++) buffer[at++] = ITEM_HEAD[k]!;
    at = writeSeq(buffer, at, item.seq);
    for (let k = 0; k < K_ENVELOPE.length; k++) buffer[at++] = K_ENVELOPE[k]!;
    buffer.set(item.bytes, at);
    at += item.bytes.byteLength;
  }
  if (at !== size - tailBytes) throw new Error(`batch encoding wrote ${at} of ${size - tailBytes} bytes`); // a bug here would corrupt frames
  if (tailBytes > 0) buffer.fill(0, at); // never uninitialised memory on the wire
  return buffer;
}

/** Encodes an acknowledgement. */
export function encodeAck(epoch: string, upTo: number, refused: readonly number[] = []): Uint8Array {
  return encode(refused.length > 0 ? { t: 'ack', epoch, upTo, refused: refused.slice(0, MAX_BATCH_ITEMS) } : { t: 'ack', epoch, upTo });
}

/** Encodes the hello frame. */
export function encodeHello(): Uint8Array {
  return encode({ t: 'hello' });
}

/** Encodes any frame object as it is (tests use this to build well-formed and hostile frames). */
export function encodeFrame(frame: Frame | Record<string, unknown>): Uint8Array {
  return encode(frame);
}
