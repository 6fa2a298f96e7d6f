/**
 * Every error code Troupe raises. Codes are stable strings so callers can branch on them
 * across process boundaries (they survive msgpack and JSON, unlike `instanceof`).
 */
export const ErrorCode = {
  INVALID_ENVELOPE: 'INVALID_ENVELOPE',
  FRAME_TOO_LARGE: 'FRAME_TOO_LARGE',
  UNKNOWN_ACTOR: 'UNKNOWN_ACTOR',
  ASK_TIMEOUT: 'ASK_TIMEOUT',
  NODE_CLOSED: 'NODE_CLOSED',
  STORAGE_CLOSED: 'STORAGE_CLOSED',
  STORAGE_FAILED: 'STORAGE_FAILED',
  RUN_NOT_FOUND: 'RUN_NOT_FOUND',
  RUN_ALREADY_ACTIVE: 'RUN_ALREADY_ACTIVE',
  RUN_FAILED: 'RUN_FAILED',
  CREW_NOT_REGISTERED: 'CREW_NOT_REGISTERED',
  MODEL_NOT_FOUND: 'MODEL_NOT_FOUND',
  MODEL_FAILED: 'MODEL_FAILED',
  TOOL_NOT_FOUND: 'TOOL_NOT_FOUND',
  TOOL_INPUT_INVALID: 'TOOL_INPUT_INVALID',
  TOOL_FAILED: 'TOOL_FAILED',
  APPROVAL_REQUIRED: 'APPROVAL_REQUIRED',
  APPROVAL_NOT_FOUND: 'APPROVAL_NOT_FOUND',
  APPROVAL_DECIDED: 'APPROVAL_DECIDED',
  RUN_NOT_ACTIVE: 'RUN_NOT_ACTIVE',
  BUDGET_EXCEEDED: 'BUDGET_EXCEEDED',
  LISTEN_FAILED: 'LISTEN_FAILED',
  TIMEOUT: 'TIMEOUT',
  SUPERVISION_ESCALATED: 'SUPERVISION_ESCALATED',
  MAX_HANDOFFS: 'MAX_HANDOFFS',
  INVALID_SPEAKER: 'INVALID_SPEAKER',
  INVALID_DELEGATION: 'INVALID_DELEGATION',
  MAX_STEPS: 'MAX_STEPS',
  RETRIES_EXHAUSTED: 'RETRIES_EXHAUSTED',
  SNAPSHOT_VERSION: 'SNAPSHOT_VERSION',
  ABORTED: 'ABORTED',
  MCP_CONNECT_FAILED: 'MCP_CONNECT_FAILED',
  SCHEMA_UNSUPPORTED: 'SCHEMA_UNSUPPORTED',
} as const;

/** One of the {@link ErrorCode} strings. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Options accepted by {@link TroupeError}. */
export interface TroupeErrorOptions {
  cause?: unknown;
  /** Structured facts about the failure (ids, limits); must be serialisable. */
  details?: Record<string, unknown>;
}

/**
 * The single error base class of Troupe. Misuse of an API (a programming error) throws a
 * `TypeError` instead; a `TroupeError` is an operational failure a caller may handle.
 */
export class TroupeError extends Error {
  override readonly name = 'TroupeError';
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: TroupeErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
  }

  /** A plain, serialisable view (what crosses a process boundary or lands in a snapshot). */
  toJSON(): SerializedError {
    return { name: this.name, code: this.code, message: this.message, details: this.details };
  }
}

/** A serialisable error as stored in snapshots, journals and reply envelopes. */
export interface SerializedError {
  name: string;
  code?: string;
  message: string;
  details?: Record<string, unknown>;
}

/** Whether `error` is a {@link TroupeError}, optionally with a given code. */
export function isTroupeError(error: unknown, code?: ErrorCode): error is TroupeError {
  return error instanceof TroupeError && (code === undefined || error.code === code);
}

/** Turns anything thrown into a plain object that survives persistence. */
export function serializeError(error: unknown): SerializedError {
  if (error instanceof TroupeError) return error.toJSON();
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string'
      ? { name: error.name, code, message: error.message }
      : { name: error.name, message: error.message };
  }
  return { name: 'Error', message: typeof error === 'string' ? error : JSON.stringify(error) ?? String(error) };
}
