import { z } from 'zod';
import type { Envelope } from './envelope.js';
import { ErrorCode, TroupeError, type SerializedError } from './errors.js';

/**
 * The protocol between actors and the kernel, the kernel's half: the XState event that
 * carries an envelope into an actor, the message types the kernel itself sends, and a zod
 * schema per payload. The crew's own vocabulary (`task`, `result`, `failure`, `delegate`,
 * `reset`) is not here but in `actors/protocol.ts`: the kernel routes envelopes whatever
 * their type, and imports point downward only.
 *
 * Payloads are checked where an envelope enters from outside the process (a peer's
 * transport, `node.deliver`, `node.receive`; see {@link validatePayload}), against a
 * registry of schemas by message type. The kernel registers its own below; the crew layer
 * registers its messages when it is imported (`actors/crew.ts`). A registry rather than a
 * list of every schema here keeps the kernel ignorant of what a crew says, and lets another
 * layer of actors bring its own messages the same way. A type nobody registered (a user's
 * `ping`) passes unchecked: it is between the user and their actors. Types are one
 * namespace per process: once registered, a type is checked for every run of the node.
 */

/** The XState event type by which the kernel hands an envelope to an actor. */
export const ENVELOPE_EVENT = 'troupe.envelope';

/** The event every actor of a run receives its mail as. */
export type EnvelopeEvent = { type: typeof ENVELOPE_EVENT; envelope: Envelope };

/** Message types the runtime itself sends between nodes. */
export const SystemMessage = {
  /** Start hosting actors of a run on this node. */
  spawn: 'troupe.spawn',
  /** The run ended: finish the part. */
  end: 'troupe.end',
} as const;

/** The message type that carries a human decision to the waiting agent. */
export const APPROVAL_DECISION = 'approval.decision';

/** The zod schema of a {@link SerializedError}, as it crosses a boundary. */
export const SerializedErrorSchema = z.object({
  name: z.string(),
  code: z.string().optional(),
  message: z.string(),
  details: z.record(z.string(), z.unknown()).optional(),
  retryable: z.boolean().optional(),
  retryAfterMs: z.number().nonnegative().optional(),
}) satisfies z.ZodType<SerializedError>;

/** A human's answer. */
export const ApprovalDecisionSchema = z.strictObject({
  decision: z.enum(['approve', 'reject']),
  /** Why (shown to the model on reject, kept in the audit trail). */
  reason: z.string().max(2000).optional(),
  /** Approve with these arguments instead of the model's (validated against the tool's schema). */
  args: z.unknown().optional(),
  /**
   * For an outcome-unknown call the human checked: it did happen, and this was its result.
   * The call is recorded as done and not run again.
   */
  result: z.unknown().optional(),
});

/** A human's answer to an approval request. */
export type ApprovalDecision = z.infer<typeof ApprovalDecisionSchema>;

/** Payload of an {@link APPROVAL_DECISION} envelope. */
export const ApprovalDecisionPayloadSchema = z.object({
  approvalId: z.string().min(1),
  callId: z.string().min(1),
  decision: ApprovalDecisionSchema,
});

/** Payload of an {@link APPROVAL_DECISION} envelope. */
export type ApprovalDecisionPayload = z.infer<typeof ApprovalDecisionPayloadSchema>;

// Payload objects are not strict: a newer peer may send a field an older one ignores (as
// `trace` was added to the spawn), and that must not get its messages refused.

/** Payload of a {@link SystemMessage.spawn} envelope. */
export const SpawnPayloadSchema = z.object({
  crew: z.string().min(1),
  version: z.string(),
  input: z.string(),
  /** The node that hosts the run's root. */
  origin: z.string().min(1),
  /** The actors this node is to host. */
  actors: z.array(z.string().min(1)).min(1),
  source: z.string().optional(),
  /** The run's trace context (`traceparent`, …), so the part's spans join the run's trace. */
  trace: z.record(z.string(), z.string()).optional(),
});

/** Payload of a {@link SystemMessage.spawn} envelope. */
export type SpawnPayload = z.infer<typeof SpawnPayloadSchema>;

/** Payload of a {@link SystemMessage.end} envelope: how the run ended. */
export const EndPayloadSchema = z.object({ status: z.enum(['completed', 'failed']) });

/** Payload of a {@link SystemMessage.end} envelope. */
export type EndPayload = z.infer<typeof EndPayloadSchema>;

const schemas = new Map<string, z.ZodType>();

/**
 * Registers the payload schema of each message type in `byType`, checked by
 * {@link validatePayload}. Registering the same schema again is a no-op; a second, different
 * schema for a type is a `TypeError` (two layers would disagree on what the type means).
 */
export function registerPayloadSchemas(byType: Readonly<Record<string, z.ZodType>>): void {
  for (const [type, schema] of Object.entries(byType)) {
    const known = schemas.get(type);
    if (known && known !== schema) throw new TypeError(`message type "${type}" already has a different payload schema`);
    schemas.set(type, schema);
  }
}

/** The schema registered for `type`, if any. */
export function payloadSchemaOf(type: string): z.ZodType | undefined {
  return schemas.get(type);
}

/**
 * Checks the payload of an untrusted envelope against the schema registered for its type,
 * and returns the envelope unchanged (what was sent is what is stored and delivered).
 * Throws `INVALID_ENVELOPE` naming the type and the first zod issue; a transport treats
 * that as a refusal for good.
 */
export function validatePayload(envelope: Envelope): Envelope {
  const schema = schemas.get(envelope.type);
  if (!schema) return envelope;
  const result = schema.safeParse(envelope.payload);
  if (result.success) return envelope;
  const issue = result.error.issues[0];
  const path = issue?.path.length ? `payload.${issue.path.map(String).join('.')}` : 'payload';
  throw new TroupeError(ErrorCode.INVALID_ENVELOPE, `invalid "${envelope.type}" envelope: ${path}: ${issue?.message ?? 'malformed'}`, {
    cause: result.error,
    details: { type: envelope.type, path },
  });
}

/** The payload of `envelope` parsed by `schema`, or `undefined` when it does not fit. */
export function payloadOf<T>(schema: z.ZodType<T>, envelope: Envelope): T | undefined {
  const result = schema.safeParse(envelope.payload);
  return result.success ? result.data : undefined;
}

registerPayloadSchemas({
  [SystemMessage.spawn]: SpawnPayloadSchema,
  [SystemMessage.end]: EndPayloadSchema,
  [APPROVAL_DECISION]: ApprovalDecisionPayloadSchema,
});
