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
  /** The database is damaged (a file missing, truncated or garbled); nothing was changed, run `troupe db repair`. */
  STORAGE_CORRUPT: 'STORAGE_CORRUPT',
  /** No database at the path, and the caller asked not to create one (a read command). */
  STORAGE_NOT_FOUND: 'STORAGE_NOT_FOUND',
  /**
   * The database's schema is newer than this code knows (a shared database another,
   * newer Troupe migrated): nothing was read or written; upgrade this node.
   */
  STORAGE_VERSION: 'STORAGE_VERSION',
  /** Another live owner executes the run (one node per run, see `Storage.claim`). */
  RUN_CLAIMED: 'RUN_CLAIMED',
  /** A write was fenced by a claim that is no longer current: another owner took the run. */
  LEASE_LOST: 'LEASE_LOST',
  RUN_NOT_FOUND: 'RUN_NOT_FOUND',
  RUN_ALREADY_ACTIVE: 'RUN_ALREADY_ACTIVE',
  RUN_FAILED: 'RUN_FAILED',
  /** The configuration of a run cannot work (an agent's model names no registered provider, a route that does not exist). */
  CONFIG_INVALID: 'CONFIG_INVALID',
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
  /** A final answer did not fit its `output` schema: an agent's after its last step, or a crew's. */
  OUTPUT_INVALID: 'OUTPUT_INVALID',
  RETRIES_EXHAUSTED: 'RETRIES_EXHAUSTED',
  SNAPSHOT_VERSION: 'SNAPSHOT_VERSION',
  ABORTED: 'ABORTED',
  MCP_CONNECT_FAILED: 'MCP_CONNECT_FAILED',
  SCHEMA_UNSUPPORTED: 'SCHEMA_UNSUPPORTED',
  /**
   * A peer's envelope refused for good: its sender is not the authenticated peer, it asks
   * this node to relay outside the runs it takes part in, or it is a spawn this node cannot
   * honour. The transport acknowledges it as refused and dead-letters it.
   */
  ENVELOPE_REFUSED: 'ENVELOPE_REFUSED',
  /** The transport's outbox for a peer holds its limit of unacknowledged envelopes (retryable: it drains when the peer is back). */
  OUTBOX_FULL: 'OUTBOX_FULL',
  /** No node answers on the control socket of a database in use (none there, or it did not answer in time). */
  CONTROL_UNAVAILABLE: 'CONTROL_UNAVAILABLE',
  /** A control-socket request was malformed, too large or of an unknown kind. */
  CONTROL_REQUEST_INVALID: 'CONTROL_REQUEST_INVALID',
  /** The audit log's key file (outside the database) is missing or unreadable: its records cannot be verified. */
  AUDIT_KEY_MISSING: 'AUDIT_KEY_MISSING',
  /** The audit key found is not the one the database's records were written with. */
  AUDIT_KEY_MISMATCH: 'AUDIT_KEY_MISMATCH',
  /** A recording file (`troupe export`) is damaged, truncated, too large or not a recording; nothing was imported. */
  RECORDING_INVALID: 'RECORDING_INVALID',
} as const;

/** One of the {@link ErrorCode} strings. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Options accepted by {@link TroupeError}. */
export interface TroupeErrorOptions {
  cause?: unknown;
  /** Structured facts about the failure (ids, limits); must be serialisable. */
  details?: Record<string, unknown>;
  /**
   * Whether doing the same thing again may succeed: `true` for transient trouble (a 429, a
   * dropped connection), `false` when it never can (a 404, a missing route). Left out, the
   * code decides: the codes in {@link FINAL_CODES} are `false`, the others unknown.
   */
  retryable?: boolean;
  /** How long the other side asked us to wait before trying again (`Retry-After`), in ms. */
  retryAfterMs?: number;
}

/**
 * Codes no retry or restart can fix, whoever raised them: the configuration, the budget or
 * the snapshot's version has to change first. Kept here so no thrower has to remember it.
 */
export const FINAL_CODES: ReadonlySet<string> = new Set<ErrorCode>([
  ErrorCode.CONFIG_INVALID,
  ErrorCode.MODEL_NOT_FOUND,
  ErrorCode.BUDGET_EXCEEDED,
  ErrorCode.SNAPSHOT_VERSION,
]);

/**
 * The single error base class of Troupe. Misuse of an API (a programming error) throws a
 * `TypeError` instead; a `TroupeError` is an operational failure a caller may handle.
 */
export class TroupeError extends Error {
  override readonly name = 'TroupeError';
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  /** Whether trying again may succeed; `undefined` when nobody knows (see {@link isRetryable}). */
  readonly retryable: boolean | undefined;
  /** How long the other side asked us to wait before trying again, in ms. */
  readonly retryAfterMs: number | undefined;

  constructor(code: ErrorCode, message: string, options: TroupeErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    const wait = options.retryAfterMs;
    if (wait !== undefined && !(Number.isFinite(wait) && wait >= 0)) throw new TypeError(`retryAfterMs must be a non-negative number of milliseconds, got ${String(wait)}`);
    this.code = code;
    this.details = options.details ?? {};
    this.retryable = options.retryable ?? (FINAL_CODES.has(code) ? false : undefined);
    this.retryAfterMs = wait;
  }

  /** A plain, serialisable view (what crosses a process boundary or lands in a snapshot). */
  toJSON(): SerializedError {
    return {
      name: this.name,
      code: this.code,
      message: this.message,
      details: this.details,
      // Left out rather than `undefined`, so the stored form says only what is known.
      ...(this.retryable !== undefined ? { retryable: this.retryable } : {}),
      ...(this.retryAfterMs !== undefined ? { retryAfterMs: this.retryAfterMs } : {}),
    };
  }
}

/** A serialisable error as stored in snapshots, journals and reply envelopes. */
export interface SerializedError {
  name: string;
  code?: string;
  message: string;
  details?: Record<string, unknown>;
  /** As {@link TroupeError.retryable}; absent when unknown. */
  retryable?: boolean;
  /** As {@link TroupeError.retryAfterMs}. */
  retryAfterMs?: number;
}

/**
 * Whether trying again (a retry, a restart, the next fallback) may help. `false` when the
 * error says `retryable: false`, or says nothing and carries a code of {@link FINAL_CODES};
 * `true` otherwise, errors of unknown origin included, because a plain `Error` from a socket
 * is usually a blip. Reads a live {@link TroupeError} and its {@link SerializedError} alike.
 */
export function isRetryable(error: unknown): boolean {
  if (error === null || typeof error !== 'object') return true;
  const { retryable, code } = error as { retryable?: unknown; code?: unknown };
  if (typeof retryable === 'boolean') return retryable;
  return !(typeof code === 'string' && FINAL_CODES.has(code));
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
