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
const isString = (value: unknown): value is string => typeof value === 'string';
const isAddress = (value: unknown) => isString(value) && value.length <= 256 && ADDRESS.test(value);
const isId = (value: unknown) => isString(value) && value.length >= 1 && value.length <= 128;
const isCount = (value: unknown) => Number.isSafeInteger(value) && (value as number) >= 0;

/** The keys an envelope may have; any other is refused. */
const ENVELOPE_KEYS = new Set(['id', 'from', 'to', 'type', 'payload', 'corr', 'replyTo', 'seq', 'ts']);

/** The first rule a value breaks: the field (`undefined` for the value as a whole) and the rule. */
export interface EnvelopeIssue {
  path: string | undefined;
  message: string;
}

/**
 * The first rule `value` breaks as an {@link Envelope}, or `undefined`: the one place the
 * envelope's rules are written ({@link EnvelopeSchema} is this rule as a zod schema). It
 * reads the value and allocates nothing, so a frame of a thousand envelopes is checked
 * without a copy of any of them (zod's object schema rebuilt each envelope, and a result per
 * field: most of a receiver's garbage per envelope).
 */
export function envelopeIssue(value: unknown): EnvelopeIssue | undefined {
  if (typeof value !== 'object' || value === null) return { path: undefined, message: 'an envelope is an object' };
  // Plain objects only: what the decoder produces, and what the encoder writes key for key.
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return { path: undefined, message: 'an envelope is a plain object' };
  for (const key in value) if (!ENVELOPE_KEYS.has(key)) return { path: undefined, message: `unrecognized key "${key.slice(0, 64)}"` };
  const e = value as Record<string, unknown>;
  if (!isId(e.id)) return { path: 'id', message: 'an id is 1-128 characters' };
  if (!isAddress(e.from)) return { path: 'from', message: ADDRESS_RULE };
  if (!isAddress(e.to)) return { path: 'to', message: ADDRESS_RULE };
  if (!isString(e.type) || !TYPE.test(e.type)) return { path: 'type', message: 'a message type starts with a letter, max 128 of [\\w.:-]' };
  if (e.corr !== undefined && !isId(e.corr)) return { path: 'corr', message: 'a correlation id is 1-128 characters' };
  if (e.replyTo !== undefined && !isAddress(e.replyTo)) return { path: 'replyTo', message: ADDRESS_RULE };
  if (!isCount(e.seq)) return { path: 'seq', message: 'seq is a non-negative integer' };
  if (!isCount(e.ts)) return { path: 'ts', message: 'ts is a non-negative integer (ms since the epoch)' };
  return undefined;
}

/**
 * The unit of communication between actors: `tell` sends one, `ask` sends one with
 * `replyTo` + `corr` and waits for the envelope that answers it.
 */
export type Envelope = {
  id: string;
  from: Address;
  to: Address;
  /** The message type: a letter, then up to 127 of `[\w.:-]`. */
  type: string;
  payload: unknown;
  /** Correlates an answer with its `ask`. */
  corr?: string | undefined;
  /** Where the receiver sends its answer. */
  replyTo?: Address | undefined;
  seq: number;
  /** Milliseconds since the epoch. */
  ts: number;
};

/**
 * The zod schema every envelope is checked against when it crosses a boundary: a plain
 * object of exactly the {@link Envelope} fields, each following its rule. Parsing returns
 * the value itself, not a copy. An issue names the field and the rule.
 */
export const EnvelopeSchema: z.ZodType<Envelope> = z.unknown().superRefine((value, ctx) => {
  const issue = envelopeIssue(value);
  if (issue) ctx.addIssue({ code: 'custom', path: issue.path === undefined ? [] : [issue.path], message: issue.message, input: value });
}) as unknown as z.ZodType<Envelope>;

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

/** Decodes and validates an envelope from msgpack bytes received from an untrusted peer. */
export function decodeEnvelope(bytes: Uint8Array, limits: EnvelopeLimits = {}): Envelope {
  return parseEnvelope(decode(bytes, limits.maxBytes ?? DEFAULT_MAX_FRAME_BYTES), limits);
}

/** Encodes an envelope for the wire or the disk. */
export function encodeEnvelope(envelope: Envelope): Uint8Array {
  return encode(envelope);
}
