import { z } from 'zod';
import type { SerializedError } from '../core/errors.js';
import { PolicySchema, type Policy } from '../core/policy.js';
import { registerPayloadSchemas, SerializedErrorSchema } from '../core/protocol.js';

/**
 * The crew's half of the actor protocol: the messages a crew's root and its agents send each
 * other, with a zod schema per payload. The kernel's half (the envelope event, the system
 * and approval messages) lives in `core/protocol.ts`, because the kernel sends those itself
 * and may not import from `actors/`; it is re-exported here so actors import one module.
 *
 * These types are refused when a peer sends one whose payload does not fit: `actors/crew.ts`
 * registers {@link CREW_PAYLOAD_SCHEMAS} with the kernel when it is imported. Receivers parse
 * the payloads they read too, since a local `node.tell` is not checked.
 */

export { APPROVAL_DECISION, ApprovalDecisionPayloadSchema, ENVELOPE_EVENT, payloadOf, SystemMessage, type EnvelopeEvent } from '../core/protocol.js';

/** Message types of a crew. */
export const CrewMessage = {
  /** Work for an agent (crew → agent); answered with a `result` or a `failure`. */
  task: 'task',
  /** An agent's answer (agent → crew), or a delegation's (crew → manager). */
  result: 'result',
  /** An agent failed its task (agent → crew), or a delegated agent did (crew → manager). */
  failure: 'failure',
  /** A manager asks the crew to give a task to another agent (manager → crew). */
  delegate: 'delegate',
  /** Back to a clean state, whatever the agent was doing (crew → agent, one-for-all restarts). */
  reset: 'reset',
} as const;

/** One of the {@link CrewMessage} types. */
export type CrewMessageType = (typeof CrewMessage)[keyof typeof CrewMessage];

// The payload types are written out (zod would infer mutable arrays where a `Policy` has
// readonly ones); `satisfies` checks that each schema parses into its type.

/** Payload of a `task`: what to do, and the most the agent may do for it (from a handoff). */
export interface TaskPayload {
  content: string;
  policy?: Policy;
}
export const TaskPayloadSchema = z.object({ content: z.string(), policy: PolicySchema.optional() }) satisfies z.ZodType<TaskPayload>;

/** An agent's turn ended by handing the conversation to another agent. */
export interface Handoff {
  to: string;
  context: string;
  /** The most the next agent may do: the handing agent's own permissions at most. */
  policy?: Policy;
}
export const HandoffSchema = z.object({ to: z.string().min(1), context: z.string(), policy: PolicySchema.optional() }) satisfies z.ZodType<Handoff>;

/** Payload of a `result`: the agent's output, and its handoff if it ended its turn by one. */
export interface ResultPayload {
  output: string;
  handoff?: Handoff;
}
export const ResultPayloadSchema = z.object({ output: z.string(), handoff: HandoffSchema.optional() }) satisfies z.ZodType<ResultPayload>;

/** Payload of a `failure`. */
export interface FailurePayload {
  error: SerializedError;
}
export const FailurePayloadSchema = z.object({ error: SerializedErrorSchema }) satisfies z.ZodType<FailurePayload>;

/** Payload of a `delegate`: which agent, and what to ask it. */
export interface DelegatePayload {
  agent: string;
  task: string;
}
export const DelegatePayloadSchema = z.object({ agent: z.string(), task: z.string() }) satisfies z.ZodType<DelegatePayload>;

/** Payload of a `reset`: nothing. */
export type ResetPayload = Record<string, never>;
export const ResetPayloadSchema = z.object({});

/** The payload schema of every {@link CrewMessage} type; the compiler checks none is missing. */
export const CREW_PAYLOAD_SCHEMAS = {
  [CrewMessage.task]: TaskPayloadSchema,
  [CrewMessage.result]: ResultPayloadSchema,
  [CrewMessage.failure]: FailurePayloadSchema,
  [CrewMessage.delegate]: DelegatePayloadSchema,
  [CrewMessage.reset]: ResetPayloadSchema,
} as const satisfies Record<CrewMessageType, z.ZodType>;

/** Registers the crew's payload schemas with the kernel (idempotent). */
export function registerCrewProtocol(): void {
  registerPayloadSchemas(CREW_PAYLOAD_SCHEMAS);
}
