/**
 * Every rule for the ids and names Troupe checks, one expression each, beside the function
 * that asserts it. Ids are used verbatim in addresses, storage keys, header values and log
 * lines, so each rule keeps out the separators of the places that embed it.
 */

/**
 * Agent ids, crew ids and tool names: a letter, then up to 63 letters, digits, `_` or `-`,
 * which is also what model providers accept as a tool name (agents are offered as tools to
 * delegate to).
 */
export const NAME = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;

/**
 * Node ids, wherever a node is named: `createNode`, a crew's placement, `--peer`, the
 * transport's handshake and outbox keys, and audit chains (`audit.<node>:`). No `.` or `:`,
 * which the keys and addresses that embed a node id (`_part.<node>`, `_ask.<node>`) use as
 * separators.
 */
export const NODE_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Run ids: safe as a storage key segment (no `:`) and as an address segment (no `/`). */
export const RUN_ID = /^[A-Za-z0-9_.-]{1,64}$/;

/** Throws a `TypeError` unless `id` may be used as a node id ({@link NODE_ID}). */
export function assertNodeId(id: unknown, what = 'node id'): asserts id is string {
  if (typeof id !== 'string' || !NODE_ID.test(id)) throw new TypeError(`${what} "${String(id)}" must match ${NODE_ID}`);
}

/** Throws a `TypeError` unless `runId` may be used as a run id ({@link RUN_ID}). */
export function assertRunId(runId: string): void {
  if (!RUN_ID.test(runId)) throw new TypeError(`run id "${runId}" must match ${RUN_ID}`);
}
