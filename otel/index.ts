/**
 * OpenTelemetry tracing of Troupe runs, on `@opentelemetry/api` alone: bring your own SDK
 * and exporter. Spans follow the OpenTelemetry GenAI semantic conventions (agent spans and
 * inference spans, status Development): `invoke_workflow <crew>` for a run, `invoke_agent
 * <agent>` for each task of an agent, `chat <model>` for model calls, `execute_tool <tool>`
 * for tool calls, plus one Troupe span per agent state (`planning <agent>`, `acting <agent>`, …).
 * Span names and attributes: docs/telemetry.md.
 * @module troupe/otel
 */
import {
  context as otelContext,
  createTraceState,
  defaultTextMapGetter,
  defaultTextMapSetter,
  isSpanContextValid,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type HrTime,
  type Span,
  type SpanContext,
  type TextMapPropagator,
  type Tracer,
  type TracerProvider,
} from '@opentelemetry/api';
import { parseToolCallId } from '../core/call-id.js';
import type { RunEvent } from '../core/events.js';
import { ROOT_ACTOR_ID } from '../core/run-host.js';
import type { RunTraceStart, TelemetryFactory, TraceCarrier } from '../core/telemetry.js';
import { PART_ACTOR_ID } from '../core/transport.js';

/**
 * Options of {@link otelTelemetry}.
 *
 * @example
 * const options: OtelTelemetryOptions = { tracerProvider: provider, propagator: propagation };
 */
export interface OtelTelemetryOptions {
  /** The tracer spans are made with. Default: `tracerProvider.getTracer('troupe')`. */
  tracer?: Tracer;
  /** Where the default tracer comes from. Default: the global provider (`trace.getTracerProvider()`). */
  tracerProvider?: TracerProvider;
  /**
   * How a context becomes the text carrier a run records and sends to its parts. Default:
   * {@link w3cTraceContext} (`traceparent`/`tracestate`), which works whether or not an SDK
   * registered a global propagator; pass `propagation` from `@opentelemetry/api` to use the
   * registered one (e.g. with baggage).
   */
  propagator?: TextMapPropagator;
}

/** `00-<trace id>-<span id>-<flags>`; later versions may append fields. */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/**
 * W3C Trace Context (`traceparent`, `tracestate`) as a propagator, built on the API alone.
 * The API's global propagator does nothing until an SDK registers one, and a run's context
 * must travel even then: this is the default of {@link otelTelemetry}.
 *
 * @example
 * const carrier: Record<string, string> = {};
 * w3cTraceContext.inject(trace.setSpan(context.active(), span), carrier, defaultTextMapSetter);
 * carrier.traceparent; // '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
 */
export const w3cTraceContext: TextMapPropagator = {
  inject(ctx, carrier, setter) {
    const span = trace.getSpanContext(ctx);
    if (!span || !isSpanContextValid(span)) return;
    setter.set(carrier, 'traceparent', `00-${span.traceId}-${span.spanId}-${(span.traceFlags & 0xff).toString(16).padStart(2, '0')}`);
    const state = span.traceState?.serialize();
    if (state) setter.set(carrier, 'tracestate', state);
  },
  extract(ctx, carrier, getter) {
    const first = (value: string | string[] | undefined) => (Array.isArray(value) ? value[0] : value);
    const header = first(getter.get(carrier, 'traceparent'))?.trim();
    const m = header ? TRACEPARENT.exec(header) : null;
    // Version ff is forbidden; version 00 has exactly four fields.
    if (!m || m[1] === 'ff' || (m[1] === '00' && m[5] !== undefined)) return ctx;
    const state = first(getter.get(carrier, 'tracestate'));
    const span: SpanContext = { traceId: m[2]!, spanId: m[3]!, traceFlags: parseInt(m[4]!, 16), isRemote: true, ...(state ? { traceState: createTraceState(state) } : {}) };
    return isSpanContextValid(span) ? trace.setSpanContext(ctx, span) : ctx;
  },
  fields: () => ['traceparent', 'tracestate'],
};

/**
 * The carrier of `ctx` (default: the active context) for `node.run(def, { traceContext })`,
 * when a run should join a trace whose context is not the active one where `run` is called
 * (a job picked from a queue, a span kept from earlier).
 *
 * @example
 * const run = await node.run(crew, { input, traceContext: traceCarrier(trace.setSpan(context.active(), jobSpan)) });
 */
export function traceCarrier(ctx: Context = otelContext.active(), propagator: TextMapPropagator = w3cTraceContext): TraceCarrier | undefined {
  const carrier: TraceCarrier = {};
  propagator.inject(ctx, carrier, defaultTextMapSetter);
  return Object.keys(carrier).length > 0 ? carrier : undefined;
}

/** Milliseconds since the epoch as an exact HrTime (a plain number below the process's time origin would be read as `performance.now()`). */
function hrTime(ms: number): HrTime {
  const seconds = Math.floor(ms / 1000);
  return [seconds, Math.min(999_999_999, Math.round((ms - seconds * 1000) * 1e6))];
}

/** `scripted:default` → `scripted`; a reference without a provider prefix names none. */
const providerOf = (ref: string): string | undefined => (ref.includes(':') ? ref.slice(0, ref.indexOf(':')) : undefined);

interface Open {
  span: Span;
  ctx: Context;
}

/**
 * A span made when first needed. A state event is emitted at the end of the macrostep that
 * entered the state, after the step's call began (its synchronous start runs first), so a
 * step's span starts at its first call if that began earlier: children stay inside parents.
 */
interface Lazy {
  name: string;
  attributes: Attributes;
  startMs: number;
  parent: Lazy | Open;
  open?: Open;
}
interface AgentSpans extends Lazy {
  step?: Lazy;
  providerKnown: boolean;
  /** The code of the agent's latest model error: the `error.type` if the agent fails. */
  lastError?: string;
}
interface RunSpans extends Open {
  agents: Map<string, AgentSpans>;
}

/** States in which an agent has no task: they end its `invoke_agent` span. */
const RESTING = new Set(['idle', 'done', 'failed']);

/**
 * Traces a node's runs with OpenTelemetry. Pass it as `createNode({ telemetry })`; spans go
 * to the tracer provider you configured (SDK, processor, exporter). A run's trace context is
 * recorded with the run and sent to the nodes that host its other parts, so a distributed or
 * resumed run is one trace; a run started inside an active span (an HTTP request) is its child.
 * Calls replayed from the journal after a resume or fork make no spans: they were traced
 * when they happened, and appear as a `troupe.call.replayed` event (on the agent's step span,
 * or on the run's span when replayed while the run is restored).
 *
 * @example
 * import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
 * import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
 * import { otelTelemetry } from 'troupe/otel';
 *
 * const provider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())] });
 * await using node = await createNode({ storage, models, telemetry: otelTelemetry({ tracerProvider: provider }) });
 */
export function otelTelemetry(options: OtelTelemetryOptions = {}): TelemetryFactory {
  return ({ nodeId, clock, subscribe }) => {
    const tracer = options.tracer ?? (options.tracerProvider ?? trace.getTracerProvider()).getTracer('troupe');
    const propagator = options.propagator ?? w3cTraceContext;
    const runs = new Map<string, RunSpans>();

    const open = (name: string, kind: SpanKind, attributes: Attributes, parent: Context, startMs: number): Open => {
      const span = tracer.startSpan(name, { kind, attributes, startTime: hrTime(startMs) }, parent);
      return { span, ctx: trace.setSpan(parent, span) };
    };

    /** The span of `node`, made now if it was not yet, starting no later than `startBy`. */
    const materialize = (node: Lazy | Open, startBy: number): Open => {
      if (!('startMs' in node)) return node;
      if (!node.open) {
        const start = Math.min(node.startMs, startBy);
        node.open = open(node.name, SpanKind.INTERNAL, node.attributes, materialize(node.parent, start).ctx, start);
      }
      return node.open;
    };

    const endStep = (agent: AgentSpans, at: number) => {
      if (agent.step) materialize(agent.step, at).span.end(hrTime(at));
      agent.step = undefined;
    };

    const endAgent = (agent: AgentSpans, at: number, outcome: string) => {
      endStep(agent, at);
      const { span } = materialize(agent, at);
      span.setAttribute('troupe.agent.outcome', outcome);
      if (outcome === 'failed') {
        span.setAttribute('error.type', agent.lastError ?? '_OTHER');
        span.setStatus({ code: SpanStatusCode.ERROR, message: 'the agent failed its task' });
      }
      span.end(hrTime(at));
    };

    /** Ends a run's spans, innermost first; `stopped` runs stay resumable. */
    const endRun = (runId: string, at: number, how: { error?: { code?: string; message: string }; stopped?: boolean }) => {
      const run = runs.get(runId);
      if (!run) return;
      runs.delete(runId);
      for (const agent of run.agents.values()) endAgent(agent, at, how.stopped ? 'stopped' : 'unfinished');
      if (how.stopped) run.span.setAttribute('troupe.run.stopped', true);
      if (how.error) {
        run.span.setAttribute('error.type', how.error.code ?? '_OTHER');
        run.span.recordException({ name: how.error.code ?? 'Error', message: how.error.message }, hrTime(at));
        run.span.setStatus({ code: SpanStatusCode.ERROR, message: how.error.message });
      }
      run.span.end(hrTime(at));
    };

    const openRun = (info: RunTraceStart): TraceCarrier | undefined => {
      const now = clock.now();
      endRun(info.runId, now, { stopped: true }); // a stale segment of the same run, if any
      // A part without a context from its origin starts its own trace: whatever context is
      // active where the spawn arrives belongs to someone else.
      const parent = info.parent ? propagator.extract(ROOT_CONTEXT, info.parent, defaultTextMapGetter) : info.part ? ROOT_CONTEXT : otelContext.active();
      const common: Attributes = { 'gen_ai.conversation.id': info.runId, 'troupe.run.id': info.runId, 'troupe.node.id': nodeId };
      if (info.resumed !== undefined) common['troupe.run.resumed_from'] = info.resumed;
      // A part is a piece of the origin's workflow, not a workflow of its own: no GenAI operation.
      const run = info.part
        ? open(`troupe.part ${info.crew}`, SpanKind.INTERNAL, { ...common, 'troupe.crew': info.crew, 'troupe.part.origin': info.part.origin, 'troupe.part.actors': info.part.actors }, parent, now)
        : open(`invoke_workflow ${info.crew}`, SpanKind.INTERNAL, { ...common, 'gen_ai.operation.name': 'invoke_workflow', 'gen_ai.workflow.name': info.crew }, parent, now);
      runs.set(info.runId, { ...run, agents: new Map() });
      const carrier: TraceCarrier = {};
      propagator.inject(run.ctx, carrier, defaultTextMapSetter);
      return Object.keys(carrier).length > 0 ? carrier : undefined;
    };

    const isRoot = (actor: string) => actor === ROOT_ACTOR_ID || actor.startsWith(`${PART_ACTOR_ID}.`);

    /** Where a call of `actor` that began at `startMs` belongs: its step, else its task, else the run. */
    const parentOf = (run: RunSpans, actor: string, startMs: number): Open => {
      const agent = run.agents.get(actor);
      return materialize(agent?.step ?? agent ?? run, startMs);
    };

    const onEvent = (event: RunEvent) => {
      const run = runs.get(event.runId);
      if (!run) return;
      const now = clock.now();
      switch (event.type) {
        case 'state': {
          if (isRoot(event.actor)) return;
          let agent = run.agents.get(event.actor);
          if (agent) endStep(agent, now);
          if (RESTING.has(event.state)) {
            if (agent) {
              run.agents.delete(event.actor);
              endAgent(agent, now, event.state === 'idle' ? 'reset' : event.state);
            }
            return;
          }
          if (!agent) {
            const attributes: Attributes = {
              'gen_ai.operation.name': 'invoke_agent',
              'gen_ai.agent.name': event.actor,
              'gen_ai.agent.id': `${event.runId}/${event.actor}`,
              'gen_ai.conversation.id': event.runId,
            };
            agent = { name: `invoke_agent ${event.actor}`, attributes, startMs: now, parent: run, providerKnown: false };
            run.agents.set(event.actor, agent);
          }
          agent.step = { name: `${event.state} ${event.actor}`, attributes: { 'gen_ai.agent.name': event.actor, 'troupe.agent.state': event.state }, startMs: now, parent: agent };
          return;
        }
        case 'model.call':
        case 'tool.call': {
          if (event.replayed) {
            // Traced when it really happened; a second span would count it twice. A call
            // replayed while the run is restored comes before its agent's first state: the
            // mark then goes on the run's span.
            const operation = event.type === 'model.call' ? 'chat' : 'execute_tool';
            const attributes = { 'troupe.call.id': event.callId, 'gen_ai.operation.name': operation, 'gen_ai.agent.name': event.actor };
            parentOf(run, event.actor, now).span.addEvent('troupe.call.replayed', attributes, hrTime(now));
            return;
          }
          // Timed on the node's clock: the call ended now and took `ms`.
          const start = now - event.ms;
          const parent = parentOf(run, event.actor, start);
          if (event.type === 'model.call') {
            const requested = event.requested ?? event.model;
            const provider = providerOf(event.model);
            const attributes: Attributes = {
              'gen_ai.operation.name': 'chat',
              'gen_ai.request.model': requested,
              'gen_ai.response.model': event.model,
              'gen_ai.usage.input_tokens': event.usage.inputTokens,
              'gen_ai.usage.output_tokens': event.usage.outputTokens,
              'gen_ai.conversation.id': event.runId,
              'troupe.call.id': event.callId,
              ...(provider ? { 'gen_ai.provider.name': provider } : {}),
            };
            open(`chat ${requested}`, SpanKind.CLIENT, attributes, parent.ctx, start).span.end(hrTime(now));
            const agent = run.agents.get(event.actor);
            // The agent span's provider is learnt from its first call (routers decide per call).
            if (agent && provider && !agent.providerKnown) {
              materialize(agent, start).span.setAttribute('gen_ai.provider.name', provider);
              agent.providerKnown = true;
            }
          } else {
            const attributes: Attributes = {
              'gen_ai.operation.name': 'execute_tool',
              'gen_ai.tool.name': event.tool,
              'gen_ai.tool.type': 'function',
              // The model's id of the call, which its chat turn refers to; Troupe's stable id apart.
              'gen_ai.tool.call.id': parseToolCallId(event.callId)?.id ?? event.callId,
              'gen_ai.conversation.id': event.runId,
              'troupe.call.id': event.callId,
            };
            const { span } = open(`execute_tool ${event.tool}`, SpanKind.INTERNAL, attributes, parent.ctx, start);
            if (!event.ok) {
              span.setAttribute('error.type', 'tool_error');
              span.setStatus({ code: SpanStatusCode.ERROR, message: `tool ${event.tool} returned an error` });
            }
            span.end(hrTime(now));
          }
          return;
        }
        case 'model.error': {
          const code = event.error.code ?? '_OTHER';
          const start = now - (event.ms ?? 0);
          const attributes: Attributes = {
            'gen_ai.operation.name': 'chat',
            'gen_ai.request.model': event.model,
            'gen_ai.conversation.id': event.runId,
            'troupe.call.id': event.callId,
            'error.type': code,
          };
          const { span } = open(`chat ${event.model}`, SpanKind.CLIENT, attributes, parentOf(run, event.actor, start).ctx, start);
          span.recordException({ name: code, message: event.error.message }, hrTime(now));
          span.setStatus({ code: SpanStatusCode.ERROR, message: event.error.message });
          span.end(hrTime(now));
          const agent = run.agents.get(event.actor);
          if (agent) agent.lastError = code;
          return;
        }
        case 'approval.requested':
        case 'approval.decided': {
          const attributes: Attributes =
            event.type === 'approval.requested'
              ? { 'troupe.approval.id': event.approvalId, 'gen_ai.tool.name': event.tool, 'troupe.approval.reason': event.reason }
              : { 'troupe.approval.id': event.approvalId, 'troupe.approval.decision': event.decision };
          materialize(run.agents.get(event.actor) ?? run, now).span.addEvent(`troupe.${event.type}`, attributes, hrTime(now));
          return;
        }
        case 'run.completed':
          endRun(event.runId, now, {});
          return;
        case 'run.failed':
          endRun(event.runId, now, { error: event.error });
          return;
        default:
          // Messages, tokens and checkpoints are too many or too small to be spans.
          return;
      }
    };

    const unsubscribe = subscribe(onEvent);
    return {
      openRun,
      close() {
        unsubscribe();
        const now = clock.now();
        for (const runId of [...runs.keys()]) endRun(runId, now, { stopped: true });
      },
    };
  };
}
