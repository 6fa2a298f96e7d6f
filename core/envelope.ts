import { z } from 'zod';
import { decode, encode, DEFAULT_MAX_FRAME_BYTES } from './codec.js';
import { ErrorCode, TroupeError } from './errors.js';

/**
 * An address names one actor: `<runId>/<actorId>` for actors inside a run, or a single
 * segment for node-level endpoints (ask reply inboxes). Segments are restricted so an
 * address can be used verbatim inside a storage key.
 */
export type Address = string;

// A segment of dots only (`..`) is refused: addresses must never read as relative paths.
// One expression for the whole address (each segment's lookahead refuses all-dots), not a
// split and a test per segment: three addresses are checked per envelope on the hot path.
const SEGMENT = String.raw`(?!\.+(?:/|$))[A-Za-z0-9_.:-]{1,128}`;
const ADDRESS = new RegExp(`^${SEGMENT}(?:/${SEGMENT})*$`);
const ADDRESS_RULE = 'an address is 1-256 characters of [A-Za-z0-9_.:-] segments joined by "/"';

/** The zod schema of an {@link Address}. */
export const AddressSchema = z
  .string()
  .max(256)
  .regex(ADDRESS, ADDRESS_RULE);

/** Builds the address of `actorId` inside run `runId`. */
export function address(runId: string, actorId: string): Address {
  return `${runId}/${actorId}`;
}

/** Splits an address into its run and actor parts (`actor` is the last segment). */
export function parseAddress(addr: Address): { runId: string | undefined; actorId: string } {
  const cut = addr.lastIndexOf('/');
  return cut === -1 ? { runId: undefined, actorId: addr } : { runId: addr.slice(0, cut), actorId: addr.slice(cut + 1) };
}

const TYPE = /^[A-Za-z][\w.:-]{0,127}$/;
const isAddress = (value: string) => value.length <= 256 && ADDRESS.test(value);
const isId = (value: string) => value.length >= 1 && value.length <= 128;
const isCount = (value: number) => Number.isSafeInteger(value) && value >= 0;

/**
 * The zod schema every envelope is checked against when it crosses a boundary.
 *
 * The fields' rules are one refinement over the whole object instead of a check per rule:
 * zod runs each check through its own machinery, and a dozen of them were most of the cost
 * of validating an envelope, which every send and every received envelope pays (about
 * 2.3 µs against 0.9 µs). The issues name the field and the rule as the per-field checks did.
 */
export const EnvelopeSchema = z
  .strictObject({
    id: z.string(),
    from: z.string(),
    to: z.string(),
    type: z.string(),
    payload: z.unknown(),
    corr: z.string().optional(),
    replyTo: z.string().optional(),
    seq: z.number(),
    ts: z.number(),
  })
  .superRefine((e, ctx) => {
    const fail = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message, input: e[path as keyof typeof e] });
    if (!isId(e.id)) fail('id', 'an id is 1-128 characters');
    if (!isAddress(e.from)) fail('from', ADDRESS_RULE);
    if (!isAddress(e.to)) fail('to', ADDRESS_RULE);
    if (!TYPE.test(e.type)) fail('type', 'a message type starts with a letter, max 128 of [\\w.:-]');
    if (e.corr !== undefined && !isId(e.corr)) fail('corr', 'a correlation id is 1-128 characters');
    if (e.replyTo !== undefined && !isAddress(e.replyTo)) fail('replyTo', ADDRESS_RULE);
    if (!isCount(e.seq)) fail('seq', 'seq is a non-negative integer');
    if (!isCount(e.ts)) fail('ts', 'ts is a non-negative integer (ms since the epoch)');
  });

/**
 * The unit of communication between actors: `tell` sends one, `ask` sends one with
 * `replyTo` + `corr` and waits for the envelope that answers it.
 */
export type Envelope = z.infer<typeof EnvelopeSchema>;

/** Validation limits for untrusted envelopes. */
export interface EnvelopeLimits {
  /** Maximum encoded size of one envelope in bytes. Default 1 MiB. */
  maxBytes?: number;
}

/**
 * Validates an untrusted value as an {@link Envelope}. Throws a {@link TroupeError} with code
 * `INVALID_ENVELOPE` naming the first offending field, or `FRAME_TOO_LARGE`.
 */
export function parseEnvelope(value: unknown, limits: EnvelopeLimits = {}): Envelope {
  const result = EnvelopeSchema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue?.path.length ? issue.path.join('.') : 'envelope';
    throw new TroupeError(ErrorCode.INVALID_ENVELOPE, `invalid envelope: ${where}: ${issue?.message ?? 'malformed'}`, {
      cause: result.error,
      details: { path: where },
    });
  }
  const max = limits.maxBytes ?? DEFAULT_MAX_FRAME_BYTES;
  const size = encode(result.data).byteLength;
  if (size > max) {
    throw new TroupeError(ErrorCode.FRAME_TOO_LARGE, `envelope of ${size} bytes exceeds the limit of ${max}`, {
      details: { size, limit: max },
    });
  }
  return result.data;
}

// Envelopes this process itself just produced with EnvelopeSchema from untrusted bytes, with
// a bound of their wire size. Module-private, so neither a peer nor a caller can add one; a
// mark is used up by the first check, so an object kept and changed later is checked again.
const vouched = new WeakMap<object, number>();

/**
 * Records that `envelope` is the output of {@link EnvelopeSchema} for untrusted bytes of at
 * most `wireBytes` (a transport that validated a whole frame, see transports/frames.ts), so
 * the next {@link checkEnvelope} of this very object does not parse it again.
 */
export function vouchEnvelope(envelope: Envelope, wireBytes: number): void {
  vouched.set(envelope, wireBytes);
}

/**
 * {@link parseEnvelope}, except that an envelope vouched for by {@link vouchEnvelope} within
 * the size limit is returned as it is: the receive path validates each envelope once.
 */
export function checkEnvelope(value: unknown, limits: EnvelopeLimits = {}): Envelope {
  if (typeof value === 'object' && value !== null) {
    const bound = vouched.get(value);
    if (bound !== undefined) {
      vouched.delete(value);
      if (bound <= (limits.maxBytes ?? DEFAULT_MAX_FRAME_BYTES)) return value as Envelope;
    }
  }
  return parseEnvelope(value, limits);
}

/** Decodes and validates an envelope from msgpack bytes received from an untrusted peer. */
export function decodeEnvelope(bytes: Uint8Array, limits: EnvelopeLimits = {}): Envelope {
  return parseEnvelope(decode(bytes, limits.maxBytes ?? DEFAULT_MAX_FRAME_BYTES), limits);
}

/** Encodes an envelope for the wire or the disk. */
export function encodeEnvelope(envelope: Envelope): Uint8Array {
  return encode(envelope);
}
