import { AsyncLocalStorage } from 'node:async_hooks';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { context, ROOT_CONTEXT, trace, type Context, type ContextManager, type HrTime } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createNode, manualClock, memoryStorage, scriptedModel, tool, type ManualClock, type ModelProvider, type RunEvent } from '../index.js';
import { createRunStore } from '../core/run-store.js';
import { otelTelemetry, traceCarrier } from '../otel/index.js';
import { pairScript, placedCrew, twoAgentCrew } from './helpers/fixtures.js';
import { memoryNetwork } from './helpers/memory-network.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const T0 = Date.UTC(2026, 0, 1);

/** A tracer provider whose finished spans stay in memory. */
function inMemoryTracing() {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  return { provider, telemetry: otelTelemetry({ tracerProvider: provider }), spans: () => exporter.getFinishedSpans() };
}

const ms = (t: HrTime) => t[0] * 1000 + t[1] / 1e6;
const named = (spans: ReadableSpan[], name: string) => spans.filter((s) => s.name === name);
const one = (spans: ReadableSpan[], name: string) => {
  const found = named(spans, name);
  expect(found, name).toHaveLength(1);
  return found[0]!;
};
const parentOf = (spans: ReadableSpan[], span: ReadableSpan) => spans.find((s) => s.spanContext().spanId === span.parentSpanContext?.spanId);
const traceparentOf = (span: ReadableSpan) => `00-${span.spanContext().traceId}-${span.spanContext().spanId}-01`;

/**
 * Every span in one trace, under one root, each child inside its parent's time range (the
 * spans are timed on a manual clock, so equal instants are exact), except the `detached`
 * ones (a resumed segment continues a span that ended when its process stopped).
 */
function expectOneTree(spans: ReadableSpan[], detached: (span: ReadableSpan) => boolean = () => false) {
  const traceId = spans[0]!.spanContext().traceId;
  const roots = spans.filter((s) => !parentOf(spans, s));
  expect(roots.map((s) => s.name)).toHaveLength(1);
  for (const span of spans) {
    expect(span.spanContext().traceId, span.name).toBe(traceId);
    expect(ms(span.startTime), span.name).toBeLessThanOrEqual(ms(span.endTime));
    const parent = parentOf(spans, span);
    if (!parent || detached(span)) continue;
    expect(ms(span.startTime), `${span.name} starts within ${parent.name}`).toBeGreaterThanOrEqual(ms(parent.startTime));
    expect(ms(span.endTime), `${span.name} ends within ${parent.name}`).toBeLessThanOrEqual(ms(parent.endTime));
  }
  return roots[0]!;
}

/**
 * The scripted model, taking exactly `latency` ms of the manual clock per call. The time
 * passes synchronously, as the call starts: the harshest order for the spans, since the state
 * event of the step that made the call is emitted only after that (at the end of the
 * transition), when the clock has already moved.
 */
const timedModel = (clock: ManualClock, latency: number, inner: ModelProvider): ModelProvider => ({
  id: inner.id,
  generate: async (request, ctx) => {
    clock.advance(latency);
    return inner.generate(request, ctx);
  },
});

/** `lookup` of the fixture crew, taking exactly `latency` ms of the manual clock. */
const timedLookup = (clock: ManualClock, latency: number) =>
  tool({
    name: 'lookup',
    description: 'Looks a word up.',
    input: z.object({ word: z.string() }),
    effect: 'read',
    run: ({ word }) => {
      clock.advance(latency);
      return `${word}: a definition`;
    },
  });

/** An AsyncLocalStorage context manager (what `@opentelemetry/context-async-hooks` provides). */
class AlsContextManager implements ContextManager {
  readonly #store = new AsyncLocalStorage<Context>();
  active = () => this.#store.getStore() ?? ROOT_CONTEXT;
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    return this.#store.run(ctx, () => fn.call(thisArg, ...args));
  }
  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== 'function') return target;
    return ((...args: unknown[]) => this.with(ctx, () => (target as (...a: unknown[]) => unknown)(...args))) as T;
  }
  enable = () => this;
  disable = () => {
    this.#store.disable();
    return this;
  };
}

describe('OpenTelemetry spans of a run', () => {
  it('makes one trace of a two-agent crew: run, agents, their steps, chat and execute_tool spans, timed on the node clock', async () => {
    const clock = manualClock(T0);
    const tracing = inMemoryTracing();
    await using storage = memoryStorage();
    await using node = await createNode({ storage, clock, telemetry: tracing.telemetry, models: { scripted: timedModel(clock, 250, scriptedModel({ script: pairScript })) } });
    const events: RunEvent[] = [];
    node.subscribe((e) => events.push(e));
    const run = await node.run(twoAgentCrew({ researcher: { tools: [timedLookup(clock, 40)] } }), { input: 'brief me', runId: 't1' });
    expect((await run.result()).output).toBe('final: a brief about actor and state');

    const spans = tracing.spans();
    const root = expectOneTree(spans);
    expect(root.name).toBe('invoke_workflow pair');
    expect(root.attributes).toMatchObject({ 'gen_ai.operation.name': 'invoke_workflow', 'gen_ai.workflow.name': 'pair', 'gen_ai.conversation.id': 't1', 'troupe.run.id': 't1', 'troupe.node.id': 'local' });
    // Four model calls of 250 ms and two tool calls of 40 ms, back to back.
    expect(ms(root.startTime)).toBe(T0);
    expect(ms(root.endTime) - ms(root.startTime)).toBe(4 * 250 + 2 * 40);
    expect(spans.map((s) => s.name).sort()).toEqual(
      [
        'invoke_workflow pair',
        'invoke_agent researcher',
        'invoke_agent writer',
        ...Array(3).fill('planning researcher'),
        ...Array(2).fill('acting researcher'),
        'planning writer',
        ...Array(4).fill('chat scripted'),
        ...Array(2).fill('execute_tool lookup'),
      ].sort(),
    );

    for (const agent of ['researcher', 'writer']) {
      const span = one(spans, `invoke_agent ${agent}`);
      expect(parentOf(spans, span)).toBe(root);
      expect(span.attributes).toMatchObject({ 'gen_ai.operation.name': 'invoke_agent', 'gen_ai.agent.name': agent, 'gen_ai.agent.id': `t1/${agent}`, 'gen_ai.provider.name': 'scripted', 'troupe.agent.outcome': 'done' });
      for (const step of spans.filter((s) => s.attributes['gen_ai.agent.name'] === agent && s.attributes['troupe.agent.state'])) {
        expect(parentOf(spans, step)).toBe(span);
      }
    }

    const calls = events.filter((e): e is Extract<RunEvent, { type: 'model.call' }> => e.type === 'model.call');
    expect(calls).toHaveLength(4);
    for (const chat of named(spans, 'chat scripted')) {
      const call = calls.find((c) => c.callId === chat.attributes['troupe.call.id'])!;
      expect(chat.attributes).toMatchObject({
        'gen_ai.operation.name': 'chat',
        'gen_ai.request.model': 'scripted',
        'gen_ai.response.model': 'scripted:default',
        'gen_ai.provider.name': 'scripted',
        'gen_ai.usage.input_tokens': call.usage.inputTokens,
        'gen_ai.usage.output_tokens': call.usage.outputTokens,
      });
      expect(parentOf(spans, chat)!.name).toBe(`planning ${call.actor}`);
      expect(ms(chat.endTime) - ms(chat.startTime)).toBe(250);
      expect(chat.status.code).toBe(0);
    }
    const tools = named(spans, 'execute_tool lookup');
    expect(tools.map((t) => t.attributes['gen_ai.tool.call.id']).sort()).toEqual(['call_0_0', 'call_1_0']);
    for (const span of tools) {
      expect(span.attributes).toMatchObject({ 'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': 'lookup', 'gen_ai.tool.type': 'function' });
      expect(parentOf(spans, span)!.name).toBe('acting researcher');
      expect(ms(span.endTime) - ms(span.startTime)).toBe(40);
    }
    // The run records the run span's context: a resume or another node continues it.
    expect((await createRunStore(storage).requireRun('t1')).trace).toEqual({ traceparent: traceparentOf(root) });
  });

  it('marks a failing tool call, a failed model call, the agent that failed and the failed run as errors', async () => {
    const clock = manualClock(T0);
    const tracing = inMemoryTracing();
    const explode = tool({ name: 'explode', description: 'Fails.', input: z.object({}), effect: 'read', run: () => { throw new Error('boom'); } });
    // The writer has no scripted turn: its model call fails, not retryably.
    const script = { researcher: [{ toolCalls: [{ name: 'explode', args: {} }] }, 'findings anyway'], writer: [] };
    await using storage = memoryStorage();
    await using node = await createNode({ storage, clock, telemetry: tracing.telemetry, models: { scripted: timedModel(clock, 100, scriptedModel({ script })) } });
    const run = await node.run(twoAgentCrew({ researcher: { tools: [explode] } }), { input: 'x', runId: 't2' });
    const result = await run.settled();
    expect(result.status).toBe('failed');

    const spans = tracing.spans();
    const root = expectOneTree(spans);
    const tool_ = one(spans, 'execute_tool explode');
    expect(tool_.status.code).toBe(2);
    expect(tool_.attributes['error.type']).toBe('tool_error');
    expect(named(spans, 'chat scripted').filter((s) => s.status.code === 2)).toHaveLength(1);
    const failedChat = named(spans, 'chat scripted').find((s) => s.status.code === 2)!;
    expect(failedChat.attributes).toMatchObject({ 'error.type': 'MODEL_FAILED', 'troupe.call.id': 'writer/t1/s1/model' });
    expect(ms(failedChat.endTime) - ms(failedChat.startTime)).toBe(100);
    expect(failedChat.events.map((e) => e.name)).toEqual(['exception']);
    const writer = one(spans, 'invoke_agent writer');
    expect(writer.status.code).toBe(2);
    expect(writer.attributes).toMatchObject({ 'troupe.agent.outcome': 'failed', 'error.type': 'MODEL_FAILED' });
    expect(one(spans, 'invoke_agent researcher').status.code).toBe(0);
    expect(root.status).toMatchObject({ code: 2, message: result.error!.message });
    expect(root.attributes['error.type']).toBe(result.error!.code);
  });

  it('makes a run over two nodes one trace: the part on the other node is a child of the run span', async () => {
    const clock = manualClock(T0);
    const net = memoryNetwork();
    const onA = inMemoryTracing();
    const onB = inMemoryTracing();
    const models = { scripted: timedModel(clock, 10, scriptedModel({ script: pairScript })) };
    await using sa = memoryStorage();
    await using sb = memoryStorage();
    await using b = await createNode({ nodeId: 'b', storage: sb, clock, transport: net.transport, crews: [placedCrew()], models, telemetry: onB.telemetry });
    await using a = await createNode({ nodeId: 'a', storage: sa, clock, transport: net.transport, crews: [placedCrew()], models, telemetry: onA.telemetry });
    const partDone = new Promise<void>((resolve) => b.subscribe((e) => e.type === 'run.completed' && e.runId === 'd1' && resolve()));
    const run = await a.run(placedCrew(), { input: 'brief me', runId: 'd1' });
    expect((await run.result()).output).toBe('final: a brief about actor and state');
    await partDone;

    const spansA = onA.spans();
    const spansB = onB.spans();
    const root = expectOneTree([...spansA, ...spansB]);
    expect(root.name).toBe('invoke_workflow pair');
    expect(spansA).toContain(root);
    const part = one(spansB, 'troupe.part pair');
    expect(part.parentSpanContext).toMatchObject({ spanId: root.spanContext().spanId, isRemote: true });
    expect(part.attributes).toMatchObject({ 'troupe.node.id': 'b', 'troupe.part.origin': 'a', 'troupe.part.actors': ['writer'] });
    expect(parentOf(spansB, one(spansB, 'invoke_agent writer'))).toBe(part);
    expect(parentOf(spansB, one(spansB, 'chat scripted'))!.name).toBe('planning writer');
    expect(named(spansA, 'invoke_agent writer')).toEqual([]);
    expect(named(spansA, 'chat scripted')).toHaveLength(3);
    // The spawn carried the run span's context, and the part recorded its own span's.
    expect((await createRunStore(sa).requireRun('d1')).trace).toEqual({ traceparent: traceparentOf(root) });
    expect((await createRunStore(sb).requireRun('d1')).trace).toEqual({ traceparent: traceparentOf(part) });
  });

  it("makes a run started inside the caller's active span its child, and joins an explicit traceContext", async () => {
    const tracing = inMemoryTracing();
    const manager = new AlsContextManager();
    expect(context.setGlobalContextManager(manager)).toBe(true);
    try {
      await using storage = memoryStorage();
      await using node = await createNode({ storage, telemetry: tracing.telemetry, models: { scripted: scriptedModel({ script: pairScript }) } });
      const tracer = tracing.provider.getTracer('app');
      const request = await tracer.startActiveSpan('POST /briefs', async (span) => {
        await (await node.run(twoAgentCrew(), { input: 'brief me', runId: 'c1' })).result();
        span.end();
        return span;
      });
      const spans = tracing.spans();
      // The app's span is timed by the SDK's clock, the run's by the node's (Date.now()).
      const top = expectOneTree(spans, (span) => span.name === 'invoke_workflow pair');
      expect(top.name).toBe('POST /briefs');
      expect(top.spanContext().spanId).toBe(request.spanContext().spanId);
      expect(parentOf(spans, one(spans, 'invoke_workflow pair'))).toBe(top);

      // An explicit context wins over the active one; a malformed one is ignored.
      const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
      await context.with(trace.setSpan(ROOT_CONTEXT, request), async () => {
        await (await node.run(twoAgentCrew(), { input: 'again', runId: 'c2', traceContext: { traceparent } })).result();
        await (await node.run(twoAgentCrew(), { input: 'again', runId: 'c3', traceContext: { traceparent: '00-not-a-context-01' } })).result();
      });
      const byRun = (runId: string) => tracing.spans().find((s) => s.name === 'invoke_workflow pair' && s.attributes['troupe.run.id'] === runId)!;
      expect(byRun('c2').spanContext().traceId).toBe('0af7651916cd43dd8448eb211c80319c');
      expect(byRun('c2').parentSpanContext).toMatchObject({ spanId: 'b7ad6b7169203331', isRemote: true });
      expect(byRun('c3').parentSpanContext).toBeUndefined();
      expect(byRun('c3').spanContext().traceId).not.toBe(request.spanContext().traceId);
      // traceCarrier() turns a context into what traceContext takes.
      expect(traceCarrier(trace.setSpan(ROOT_CONTEXT, request))).toEqual({ traceparent: traceparentOf(top) });
    } finally {
      context.disable();
    }
  });

  it('continues the same trace when a run resumes, and makes no second span for a call replayed from the journal', async () => {
    const clock = manualClock(T0);
    const tracing = inMemoryTracing();
    await using storage = memoryStorage();
    const first = await createNode({ storage, clock, telemetry: tracing.telemetry, models: { scripted: timedModel(clock, 100, scriptedModel({ script: pairScript })) } });
    // The node stops the moment the writer's answer is recorded, before the writer acts on
    // it: the checkpoint holds the answer with the writer still planning, so the resumed
    // writer replays that call from the journal instead of calling the model again.
    let closed: Promise<void> | undefined;
    first.subscribe((e) => {
      if (e.type === 'model.call' && e.actor === 'writer') closed ??= first.close();
    });
    await first.run(twoAgentCrew(), { input: 'brief me', runId: 'r1' });
    await new Promise<void>((resolve) => first.subscribe((e) => e.type === 'model.call' && e.actor === 'writer' && resolve()));
    await closed;
    const recorded = (await createRunStore(storage).requireRun('r1')).trace;

    clock.advance(60_000);
    const events: RunEvent[] = [];
    const counted = scriptedModel({ script: pairScript });
    const calledAgain: string[] = [];
    await using second = await createNode({
      storage,
      clock,
      telemetry: tracing.telemetry,
      crews: [twoAgentCrew()],
      resume: false,
      models: { scripted: { id: 'scripted', generate: (request, ctx) => (calledAgain.push(request.agent), counted.generate(request, ctx)) } },
    });
    second.subscribe((e) => events.push(e));
    expect((await (await second.resume('r1')).result()).output).toBe('final: a brief about actor and state');
    expect(calledAgain).toEqual([]);
    expect(events).toContainEqual(expect.objectContaining({ type: 'model.call', actor: 'writer', callId: 'writer/t1/s1/model', replayed: true }));

    const spans = tracing.spans();
    const resumed = spans.find((s) => s.name === 'invoke_workflow pair' && s.attributes['troupe.run.resumed_from'] !== undefined)!;
    const root = expectOneTree(spans, (span) => span === resumed);
    expect(root.attributes['troupe.run.stopped']).toBe(true);
    expect(parentOf(spans, resumed)).toBe(root);
    expect(ms(resumed.startTime)).toBe(ms(root.endTime) + 60_000);
    // Each call is one span, made where it happened; the replay, made while the run was
    // restored, is an event of the resumed segment.
    expect(named(spans, 'chat scripted').map((s) => s.attributes['troupe.call.id']).sort()).toEqual([
      'researcher/t1/s1/model',
      'researcher/t1/s2/model',
      'researcher/t1/s3/model',
      'writer/t1/s1/model',
    ]);
    const writerTasks = named(spans, 'invoke_agent writer');
    expect(writerTasks.map((s) => s.attributes['troupe.agent.outcome'])).toEqual(['stopped', 'done']);
    const marks = spans.flatMap((s) => s.events.filter((e) => e.name === 'troupe.call.replayed').map((e) => ({ on: s, ...e.attributes })));
    expect(marks.map(({ on: _on, ...attributes }) => attributes)).toEqual([{ 'troupe.call.id': 'writer/t1/s1/model', 'gen_ai.operation.name': 'chat', 'gen_ai.agent.name': 'writer' }]);
    // In the resumed segment: on its run span, or on the writer's step span under it (a
    // restored run reads the recorded answer from storage, so the step may have begun).
    const inResumed = (span: (typeof spans)[number] | undefined): boolean => span !== undefined && (span === resumed || inResumed(parentOf(spans, span)));
    expect(inResumed(marks[0]!.on)).toBe(true);
    // The record keeps the first segment's context, so every later resume joins the same trace.
    expect(recorded).toEqual({ traceparent: traceparentOf(root) });
    expect((await createRunStore(storage).requireRun('r1')).trace).toEqual(recorded);
  });

  it("carries a caller's context without telemetry, and a broken telemetry plug-in never fails a run", async () => {
    await using storage = memoryStorage();
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    await using plain = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript }) } });
    await (await plain.run(twoAgentCrew(), { input: 'x', runId: 'p1', traceContext: { traceparent, junk: 42 } as never })).result();
    expect((await createRunStore(storage).requireRun('p1')).trace).toEqual({ traceparent });

    await using broken = await createNode({
      storage,
      models: { scripted: scriptedModel({ script: pairScript }) },
      telemetry: ({ subscribe }) => {
        subscribe(() => {
          throw new Error('listener bug');
        });
        return {
          openRun: () => {
            throw new Error('openRun bug');
          },
          close: () => {
            throw new Error('close bug');
          },
        };
      },
    });
    expect((await (await broken.run(twoAgentCrew(), { input: 'x', runId: 'p2', traceContext: { traceparent } })).result()).output).toBe('final: a brief about actor and state');
    expect((await createRunStore(storage).requireRun('p2')).trace).toEqual({ traceparent });
    await broken.close();
  });

  it('loads no OpenTelemetry module unless troupe/otel is imported', async () => {
    // A child process whose module resolution refuses every @opentelemetry package.
    const refuse = `export async function resolve(specifier, ctx, next) { if (specifier.startsWith('@opentelemetry/')) throw new Error('refused ' + specifier); return next(specifier, ctx); }`;
    const program = (entry: string) => `
      import { register } from 'node:module';
      register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(refuse)}));
      const { createNode, memoryStorage, scriptedModel } = await import('./index.ts');
      const { pairScript, twoAgentCrew } = await import('./test/helpers/fixtures.ts');
      ${entry}
      const node = await createNode({ storage: memoryStorage(), models: { scripted: scriptedModel({ script: pairScript }) } });
      const run = await node.run(twoAgentCrew(), { input: 'x' });
      console.log((await run.result()).output);
      await node.close();`;
    const runChild = (entry: string) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
        execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', program(entry)], { cwd: ROOT }, (error, stdout, stderr) =>
          resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
        ),
      );
    const [without, withOtel] = await Promise.all([runChild(''), runChild(`await import('./otel/index.ts');`)]);
    expect(without).toMatchObject({ code: 0, stdout: 'final: a brief about actor and state\n' });
    // The same harness does notice when the module is loaded.
    expect(withOtel.code).not.toBe(0);
    expect(withOtel.stderr).toContain('refused @opentelemetry/api');
  });
});
