/**
 * The control socket's protocol: newline-delimited JSON, one request or response a line,
 * each request with an id its response repeats. Both sides validate what they read with
 * these schemas: the node never trusts a client's line, the client never trusts the node's.
 * @module
 */
import { z } from 'zod';

/** Longest request line, in bytes (requests are ids and short options). */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** Longest response line, in bytes; `entries` pages stop short of it. */
export const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;
/** Most entries one `entries` response carries; the client asks for the next page. */
export const MAX_PAGE_ENTRIES = 512;
/** Protocol version, answered by `hello`. */
export const CONTROL_PROTOCOL_VERSION = 1;

const RequestId = z.string().min(1).max(64);
const Key = z.string().min(1).max(4096);

/** What a client may ask. Reads are raw storage reads, so every read command shares the run store's code. */
export const ControlRequestSchema = z.discriminatedUnion('method', [
  z.object({ id: RequestId, method: z.literal('hello') }).strict(),
  z.object({ id: RequestId, method: z.literal('get'), key: Key }).strict(),
  z
    .object({
      id: RequestId,
      method: z.literal('entries'),
      range: z.object({ gte: Key.optional(), lt: Key.optional(), reverse: z.boolean().optional(), limit: z.number().int().positive().max(MAX_PAGE_ENTRIES) }).strict(),
    })
    .strict(),
  z
    .object({
      id: RequestId,
      method: z.literal('approve'),
      approvalId: z.string().min(1).max(200),
      args: z.unknown().optional(),
      result: z.unknown().optional(),
      reason: z.string().max(10_000).optional(),
    })
    .strict(),
  z.object({ id: RequestId, method: z.literal('reject'), approvalId: z.string().min(1).max(200), reason: z.string().min(1).max(10_000) }).strict(),
]);

/** One request. */
export type ControlRequest = z.infer<typeof ControlRequestSchema>;
/** A request without its id (the client adds it). */
export type ControlCall = ControlRequest extends infer R ? (R extends { id: string } ? Omit<R, 'id'> : never) : never;

/** What `hello` answers: who holds the database. */
export const HelloSchema = z.object({ version: z.number().int(), pid: z.number().int(), nodeId: z.string(), db: z.string() });
/** `get`: the value, base64, or null when the key is absent. */
export const GetResultSchema = z.object({ value: z.string().nullable() });
/** `entries`: key and base64 value pairs in the order asked; `more` when the page was cut short by size. */
export const EntriesResultSchema = z.object({ entries: z.array(z.tuple([z.string(), z.string()])), more: z.boolean() });
/** `approve` / `reject`: the decision is durable. */
export const DecidedResultSchema = z.object({ approvalId: z.string(), runId: z.string(), decision: z.enum(['approve', 'reject']) });

/** An error as it crosses the socket. */
export const ControlErrorSchema = z.object({ code: z.string(), message: z.string(), details: z.record(z.string(), z.unknown()).optional() });
/** An error as it crosses the socket. */
export type ControlError = z.infer<typeof ControlErrorSchema>;

/** One response: the result of request `id`, or why it failed (`id` null when the request had none readable). */
export const ControlResponseSchema = z.union([
  z.object({ id: RequestId, ok: z.literal(true), result: z.unknown() }).strict(),
  z.object({ id: RequestId.nullable(), ok: z.literal(false), error: ControlErrorSchema }).strict(),
]);

/** One response. */
export type ControlResponse = z.infer<typeof ControlResponseSchema>;
