import { z } from 'zod';
import { decode, encode } from '../core/codec.js';
import { EnvelopeSchema, vouchEnvelope } from '../core/envelope.js';
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

/** An outbox incarnation: random hex, new whenever a sender's storage starts empty. */
export const EpochSchema = z.string().regex(/^[0-9a-f]{16,64}$/);

const SeqSchema = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);

/** A batch of envelopes with their per-pair sequence numbers, strictly increasing. */
export const BatchFrameSchema = z.strictObject({
  t: z.literal('batch'),
  epoch: EpochSchema,
  items: z.array(z.strictObject({ seq: SeqSchema, envelope: EnvelopeSchema })).min(1).max(MAX_BATCH_ITEMS),
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
  const result = FrameSchema.safeParse(decode(bytes, maxBytes));
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue?.path.length ? issue.path.join('.') : 'frame';
    throw new TroupeError(ErrorCode.INVALID_ENVELOPE, `invalid frame: ${where}: ${issue?.message ?? 'malformed'}`, { cause: result.error, details: { path: where } });
  }
  const frame = result.data;
  if (frame.t === 'batch') {
    for (let i = 1; i < frame.items.length; i++) {
      if (frame.items[i]!.seq <= frame.items[i - 1]!.seq) {
        throw new TroupeError(ErrorCode.INVALID_ENVELOPE, `invalid frame: items.${i}.seq: sequence numbers must increase`, { details: { path: `items.${i}.seq` } });
      }
    }
    // Every envelope just passed EnvelopeSchema: the node's deliver need not parse it again.
    for (const item of frame.items) vouchEnvelope(item.envelope, bytes.byteLength);
  }
  return frame;
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
const MAP2 = Uint8Array.of(0x82);
const MAP3 = Uint8Array.of(0x83);

function arrayHeader(n: number): Uint8Array {
  if (n < 16) return Uint8Array.of(0x90 | n);
  return Uint8Array.of(0xdc, n >> 8, n & 0xff); // array16; MAX_BATCH_ITEMS fits
}

/**
 * Encodes a batch by splicing the stored envelope bytes into the frame (a msgpack map
 * value is just the next encoded value), so envelopes are encoded once, when sent.
 */
export function encodeBatch(epoch: string, items: readonly BatchItem[]): Uint8Array {
  if (items.length === 0 || items.length > MAX_BATCH_ITEMS) throw new TypeError(`a batch holds 1-${MAX_BATCH_ITEMS} items, not ${items.length}`);
  const parts: Uint8Array[] = [MAP3, K_T, V_BATCH, K_EPOCH, encode(epoch), K_ITEMS, arrayHeader(items.length)];
  for (const item of items) parts.push(MAP2, K_SEQ, encode(item.seq), K_ENVELOPE, item.bytes);
  return Buffer.concat(parts);
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
