import type { Clock } from './clock.js';
import type { RunEvent } from './events.js';

/**
 * The kernel's whole knowledge of tracing: a run records a trace context and carries it to
 * the nodes that host its other parts. What a trace context means, and which spans come out
 * of a node's events, is the business of a telemetry plug-in (`otelTelemetry` from
 * `troupe/otel`); the kernel never imports a tracing library.
 */

/**
 * A trace context as text headers, W3C Trace Context unless the plug-in says otherwise:
 * `{ traceparent: '00-<trace id>-<span id>-01', tracestate?: '…' }`. Serialisable, so it is
 * stored in the run record and sent in `troupe.spawn` envelopes.
 *
 * @example
 * // A run started for an incoming HTTP request joins the caller's trace.
 * await node.run(crew, { input, traceContext: { traceparent: String(req.headers.traceparent) } });
 */
export type TraceCarrier = Record<string, string>;

/**
 * What a telemetry plug-in is told when a run begins or resumes on its node.
 *
 * @example
 * const info: RunTraceStart = { runId: 'r1', crew: 'research', parent: { traceparent } };
 */
export interface RunTraceStart {
  runId: string;
  crew: string;
  /** Set when this node hosts only `actors` of a run whose root lives on node `origin`. */
  part?: { origin: string; actors: string[] };
  /**
   * The context the run continues: for a fresh run the caller's `traceContext`, for a part
   * the origin's run context from the spawn, for a resumed run the context recorded when it
   * started. Absent: a fresh run may use the plug-in's ambient context.
   */
  parent?: TraceCarrier;
  /** Set when the run resumes from this checkpoint (after a restart or as a fork). */
  resumed?: number;
}

/**
 * A node's telemetry plug-in. It watches the node's events (subscribed through its
 * {@link TelemetryBindings}) and is asked for each run's trace context.
 *
 * @example
 * const silent: NodeTelemetry = { openRun: (run) => run.parent, close() {} };
 */
export interface NodeTelemetry {
  /**
   * Called synchronously when a run begins or resumes on the node, before its first event.
   * Returns the run's trace context (the carrier of the span that now represents the run),
   * which the node records with a fresh run and sends to the nodes hosting its parts.
   */
  openRun(run: RunTraceStart): TraceCarrier | undefined;
  /** The node is closing: its runs stopped here (they stay resumable). */
  close(): void;
}

/**
 * What the node hands its telemetry plug-in when it creates it.
 *
 * @example
 * const factory: TelemetryFactory = ({ nodeId, clock, subscribe }) => {
 *   subscribe((e) => console.log(nodeId, clock.now(), e.type));
 *   return { openRun: (run) => run.parent, close() {} };
 * };
 */
export interface TelemetryBindings {
  nodeId: string;
  /** The node's clock: spans are timed on it, so a manual clock gives exact timings in tests. */
  clock: Clock;
  /** Every live event of the node's runs, as `node.subscribe` sees them. */
  subscribe(listener: (event: RunEvent) => void): () => void;
}

/**
 * Creates a node's telemetry plug-in; `createNode({ telemetry })` calls it once.
 *
 * @example
 * import { otelTelemetry } from 'troupe/otel';
 * await createNode({ storage, telemetry: otelTelemetry() });
 */
export type TelemetryFactory = (bindings: TelemetryBindings) => NodeTelemetry;

const CARRIER_KEY = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * The trace carrier in `value`, keeping only well-formed, bounded text entries. Carriers
 * come from callers and from peers' spawn envelopes, so they are untrusted input.
 *
 * @example
 * traceCarrierOf({ traceparent: '00-…-01', junk: 42 }); // { traceparent: '00-…-01' }
 */
export function traceCarrierOf(value: unknown): TraceCarrier | undefined {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return undefined;
  const carrier: TraceCarrier = {};
  let count = 0;
  for (const [key, entry] of Object.entries(value)) {
    if (count === 8) break;
    if (!CARRIER_KEY.test(key) || typeof entry !== 'string' || entry.length === 0 || entry.length > 2048) continue;
    carrier[key] = entry;
    count += 1;
  }
  return count > 0 ? carrier : undefined;
}

/** A node's view of its (optional) telemetry plug-in; see {@link nodeTelemetry}. */
export interface NodeTracing {
  /** The trace context to record with a run that begins or resumes now. */
  runContext(run: RunTraceStart): TraceCarrier | undefined;
  close(): void;
}

/**
 * Wraps a node's telemetry plug-in so the node can call it unconditionally. Without a
 * plug-in the node still carries the caller's context (parts on traced nodes then join the
 * caller's trace). A resumed run keeps the context it recorded first, so every segment of
 * it belongs to one trace. A plug-in's failure never fails a run.
 *
 * @example
 * const tracing = nodeTelemetry(options.telemetry, { nodeId, clock, subscribe });
 * record.trace = tracing.runContext({ runId, crew, parent });
 */
export function nodeTelemetry(factory: TelemetryFactory | undefined, bindings: TelemetryBindings): NodeTracing {
  const plugin = factory?.(bindings);
  return {
    runContext(run) {
      const parent = traceCarrierOf(run.parent);
      let own: TraceCarrier | undefined;
      try {
        own = traceCarrierOf(plugin?.openRun({ ...run, parent }));
      } catch {
        // Tracing is an observer: its bug is not the run's failure.
      }
      return run.resumed !== undefined ? (parent ?? own) : (own ?? parent);
    },
    close() {
      try {
        plugin?.close();
      } catch {
        // As above.
      }
    },
  };
}
