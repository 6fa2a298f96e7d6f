/**
 * A recipe for Stately's inspector (`@statelyai/inspect`, not a dependency of Troupe) on a
 * Troupe node: options for its `createWebSocketInspector`/`createBrowserInspector` that let
 * through what the Stately UI draws (every actor, its machine, its states, the event types
 * that moved it) and keep in the process what a run's actors carry: conversations, tool
 * arguments and results, model replies, envelopes with their payloads.
 */

type Json = Record<string, unknown>;

/** The fields of a context that are numbers, booleans or null: counters and flags, never text. */
function counters(context: unknown): Json {
  if (context === null || typeof context !== 'object') return {};
  return Object.fromEntries(Object.entries(context).filter(([, v]) => v === null || typeof v === 'number' || typeof v === 'boolean'));
}

function withoutContext(definition: string): string {
  try {
    const config = JSON.parse(definition) as Json;
    return JSON.stringify('context' in config ? { ...config, context: counters(config.context) } : config);
  } catch {
    return '{}';
  }
}

/**
 * Spread into `createWebSocketInspector({ url, ...statelySafe })`. Contexts keep their counters
 * only (`step`, `attempt`, `tasksDone`, …), events their `type`, snapshots their `status` and
 * `value`; actor inputs, outputs and errors (a model call's reply, a tool's result) are dropped.
 *
 * @example
 * import { createWebSocketInspector } from '@statelyai/inspect';
 * const stately = createWebSocketInspector({ url: 'ws://localhost:8080', ...statelySafe });
 * await using node = await createNode({ storage, models, inspect: stately.inspect });
 */
export const statelySafe = {
  sanitizeContext: (context: unknown): Json => counters(context),
  sanitizeEvent: <E extends { type: string }>(event: E): E => ({ type: event.type }) as E,
  serialize: <E>(event: E): E => {
    const e = event as Json & { snapshot?: Json; event?: { type?: unknown }; definition?: unknown };
    const out: Json = { ...e };
    if (e.snapshot && typeof e.snapshot === 'object') out.snapshot = { status: e.snapshot.status, value: e.snapshot.value, context: counters(e.snapshot.context) };
    if (e.event && typeof e.event === 'object') out.event = { type: e.event.type };
    // The machine config is what Stately draws; its initial context is data, counters kept only.
    if (typeof e.definition === 'string') out.definition = withoutContext(e.definition);
    return out as E;
  },
};
