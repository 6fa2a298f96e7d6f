import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, ErrorCode, memoryStorage, msg, tool, TroupeError, type ModelProvider, type ModelRequest, type ModelResponse } from '../index.js';
import { manualClock } from '../core/clock.js';
import { createRunStore } from '../core/run-store.js';
import { createRouter, openAICompatible, type RouterOptions } from '../models/index.js';
import { openai, startFakeLLMServer, type FakeLLMServer } from './helpers/fake-llm-server.js';
import { failure } from './helpers/failure.js';
import { steppingClock } from './helpers/stepping-clock.js';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

/** An in-process provider whose behaviour per call is a function; it records what it was asked. */
function stub(id: string, behave: (request: ModelRequest, signal: AbortSignal) => string | Error | Promise<string>) {
  const calls: string[] = [];
  const provider: ModelProvider = {
    id,
    async generate(request, { signal }): Promise<ModelResponse> {
      calls.push(`${id}:${request.model}`);
      const outcome = await behave(request, signal);
      if (outcome instanceof Error) throw outcome;
      return { message: msg.assistant(outcome), usage: { inputTokens: 1, outputTokens: 1 }, model: `${id}:${request.model}` };
    },
  };
  return Object.assign(provider, { calls });
}

const transient = (text = 'HTTP 503: unavailable') => new TroupeError(ErrorCode.MODEL_FAILED, text, { retryable: true, details: { status: 503 } });
const final = (text = 'HTTP 400: bad request') => new TroupeError(ErrorCode.MODEL_FAILED, text, { retryable: false, details: { status: 400 } });

const request = (model: string, extra: Partial<ModelRequest> = {}): ModelRequest => ({ model, messages: [msg.user('hi')], tools: [], agent: 'a', runId: 'r', step: 1, phase: 'plan', attempt: 0, ...extra });
const ctx = () => ({ signal: new AbortController().signal });


describe('createRouter', () => {
  it('validates its configuration eagerly', () => {
    const providers = { a: stub('a', () => 'x') };
    const make = (extra: Partial<RouterOptions>) => () => createRouter({ providers, routes: { r: ['a:m'] }, ...extra });
    expect(make({ routes: { r: ['a:m', 'nope:m'] } })).toThrow(/route "r" candidate 2 "nope:m" names unknown provider "nope"; known: a/);
    expect(make({ routes: { r: [] } })).toThrow(/route "r" needs at least one candidate/);
    expect(make({ routes: { r: { plan: ['a:m'], recover: ['ghost:m'] } } })).toThrow(/unknown provider "ghost"/);
    expect(make({ routes: { r: ['router:other'] } })).toThrow(/names the router itself/);
    expect(make({ deprecations: { 'a:x': { replacedBy: 'b:y' } } })).toThrow(/replacement of "a:x" "b:y" names unknown provider "b"/);
    expect(make({ deprecations: { 'a:x': { replacedBy: 'a:y', after: 'next tuesday' } } })).toThrow(/unreadable date/);
    expect(make({ deprecations: { 'a:x': { replacedBy: 'a:y' }, 'a:y': { replacedBy: 'a:z', after: '2030-01-01' }, 'a:z': { replacedBy: 'a:x' } } })).toThrow(
      /deprecations form a cycle: a:x → a:y → a:z → a:x/,
    );
    expect(make({ breaker: { failureThreshold: 0 } })).toThrow(/failureThreshold must be a positive integer/);
  });

  it('falls back in order on retryable failures and records every attempt', async () => {
    const a = stub('a', () => transient('HTTP 429: slow down'));
    const b = stub('b', () => new Error('socket hang up'));
    const c = stub('c', () => 'from c');
    const router = createRouter({ providers: { a, b, c }, routes: { writer: ['a:big', 'b:mid', 'c:small'] } });
    const response = await router.generate(request('writer'), ctx());
    expect([...a.calls, ...b.calls, ...c.calls]).toEqual(['a:big', 'b:mid', 'c:small']);
    expect(response.message.content).toBe('from c');
    expect(response.model).toBe('c:small');
    expect(response.meta).toEqual({
      route: 'writer',
      requested: 'a:big',
      served: 'c:small',
      attempts: [{ candidate: 'a:big', error: 'HTTP 429: slow down' }, { candidate: 'b:mid', error: 'socket hang up' }, { candidate: 'c:small' }],
    });
  });

  it('stops at the first non-retryable error and propagates it unchanged', async () => {
    const error = final();
    const a = stub('a', () => error);
    const b = stub('b', () => 'unused');
    const router = createRouter({ providers: { a, b }, routes: { writer: ['a:m', 'b:m'] } });
    await expect(router.generate(request('writer'), ctx())).rejects.toBe(error);
    expect(b.calls).toEqual([]);
  });

  it('fails retryably, listing every candidate, when all of them fail', async () => {
    const a = stub('a', () => new TroupeError(ErrorCode.MODEL_FAILED, 'HTTP 429: later', { retryable: true, retryAfterMs: 4000 }));
    const b = stub('b', () => new TroupeError(ErrorCode.MODEL_FAILED, 'HTTP 429: much later', { retryable: true, retryAfterMs: 9000 }));
    const router = createRouter({ providers: { a, b }, routes: { writer: ['a:m', 'b:m'] } });
    const error = await failure(router.generate(request('writer'), ctx()));
    expect(error.code).toBe('MODEL_FAILED');
    expect(error.message).toBe('router "router" route "writer": every candidate failed (a:m: HTTP 429: later; b:m: HTTP 429: much later)');
    expect(error).toMatchObject({ retryable: true, retryAfterMs: 4000, details: { route: 'writer', attempts: [{ candidate: 'a:m' }, { candidate: 'b:m' }] } });
  });

  it('routes by phase: recovery goes to its own candidates, arrays serve both phases', async () => {
    const big = stub('big', () => 'planned');
    const small = stub('small', () => 'recovered');
    const router = createRouter({ providers: { big, small }, routes: { planner: { plan: ['big:m'], recover: ['small:m', 'big:m'] }, plain: ['small:x'] } });
    expect((await router.generate(request('planner'), ctx())).model).toBe('big:m');
    expect((await router.generate(request('planner', { phase: 'recover', attempt: 1 }), ctx())).model).toBe('small:m');
    expect((await router.generate(request('plain', { phase: 'recover' }), ctx())).model).toBe('small:x');
    expect(big.calls).toEqual(['big:m']);
    const unknown = await failure(router.generate(request('nope'), ctx()));
    expect(unknown.code).toBe('MODEL_NOT_FOUND');
    expect(unknown.retryable).toBe(false);
  });

  it('switches deprecated models once their date passes on the clock, following chains', async () => {
    const clock = manualClock(Date.parse('2025-05-31T23:59:59Z'));
    let bDown = false;
    const a = stub('a', () => 'a');
    const b = stub('b', () => (bDown ? transient() : 'b'));
    const router = createRouter({
      providers: { a, b },
      routes: { writer: ['a:old', 'a:new'] },
      deprecations: { 'a:old': { replacedBy: 'a:new', after: '2025-06-01T00:00:00Z' }, 'a:new': { replacedBy: 'b:newer', after: '2025-07-01T00:00:00Z' } },
      clock,
    });
    const before = await router.generate(request('writer'), ctx());
    expect(before.model).toBe('a:old');
    expect(before.meta?.deprecated).toBeUndefined();

    clock.advance(1000);
    const after = await router.generate(request('writer'), ctx());
    expect(after.model).toBe('a:new');
    expect(after.meta).toMatchObject({ requested: 'a:old', served: 'a:new', deprecated: { from: 'a:old', to: 'a:new' } });

    clock.advance(30 * 24 * 3600_000);
    const chained = await router.generate(request('writer'), ctx());
    expect(chained.model).toBe('b:newer');
    expect(chained.meta).toMatchObject({ deprecated: { from: 'a:old', to: 'b:newer' }, attempts: [{ candidate: 'b:newer' }] });
    expect([...a.calls, ...b.calls]).toEqual(['a:old', 'a:new', 'b:newer']);

    // Both candidates now map to b:newer, which is tried once, not twice.
    bDown = true;
    const error = await failure(router.generate(request('writer'), ctx()));
    expect(error.details.attempts).toEqual([{ candidate: 'b:newer', error: 'HTTP 503: unavailable' }]);
  });

  it('opens a provider circuit after consecutive failures and closes it after a half-open trial', async () => {
    const clock = manualClock(0);
    let aUp = false;
    const a = stub('a', () => (aUp ? 'a is back' : transient()));
    const b = stub('b', () => 'b');
    const router = createRouter({ providers: { a, b }, routes: { writer: ['a:m', 'b:m'] }, breaker: { failureThreshold: 2, cooldownMs: 1000 }, clock });

    await router.generate(request('writer'), ctx());
    expect(router.breakers()).toEqual({ a: 'closed', b: 'closed' });
    await router.generate(request('writer'), ctx());
    expect(router.breakers()).toEqual({ a: 'open', b: 'closed' });

    const skipped = await router.generate(request('writer'), ctx());
    expect(a.calls).toHaveLength(2); // not called while open
    expect(skipped.meta?.attempts).toEqual([{ candidate: 'a:m', error: 'circuit open for provider "a"', skipped: true, lastError: 'HTTP 503: unavailable' }, { candidate: 'b:m' }]);

    clock.advance(1000);
    expect(router.breakers().a).toBe('half-open');
    const trialFailed = await router.generate(request('writer'), ctx());
    expect(trialFailed.model).toBe('b:m');
    expect(a.calls).toHaveLength(3);
    expect(router.breakers().a).toBe('open'); // one failed trial reopens at once

    clock.advance(1000);
    aUp = true;
    const recovered = await router.generate(request('writer'), ctx());
    expect(recovered.model).toBe('a:m');
    expect(router.breakers().a).toBe('closed');
  });

  it('lets exactly one trial through a half-open circuit', async () => {
    const clock = manualClock(0);
    let release!: (text: string) => void;
    let mode: 'fail' | 'hold' = 'fail';
    const a = stub('a', () => (mode === 'fail' ? transient() : new Promise<string>((resolve) => (release = resolve))));
    const b = stub('b', () => 'b');
    const router = createRouter({ providers: { a, b }, routes: { writer: ['a:m', 'b:m'] }, breaker: { failureThreshold: 1, cooldownMs: 50 }, clock });
    await router.generate(request('writer'), ctx());
    clock.advance(50);
    mode = 'hold';
    const trial = router.generate(request('writer'), ctx());
    const other = await router.generate(request('writer'), ctx());
    expect(other.meta?.attempts).toEqual([{ candidate: 'a:m', error: 'circuit open for provider "a"', skipped: true, lastError: 'HTTP 503: unavailable' }, { candidate: 'b:m' }]);
    release('trial ok');
    expect((await trial).model).toBe('a:m');
    expect(router.breakers().a).toBe('closed');
  });

  it('does not count non-retryable answers against a provider', async () => {
    let calls = 0;
    const a = stub('a', () => (++calls % 2 ? transient() : final()));
    const router = createRouter({ providers: { a }, routes: { r: ['a:m'] }, breaker: { failureThreshold: 2 } });
    for (let i = 0; i < 4; i++) await router.generate(request('r'), ctx()).catch(() => undefined);
    expect(router.breakers().a).toBe('closed');
  });

  it('pauses a candidate that answered 429 with Retry-After for that long, instead of opening its circuit', async () => {
    const clock = manualClock(0);
    const limited = () => new TroupeError(ErrorCode.MODEL_FAILED, 'HTTP 429: slow down', { retryable: true, retryAfterMs: 5_000, details: { status: 429 } });
    const a = stub('a', limited);
    const b = stub('b', () => 'b');
    const router = createRouter({ providers: { a, b }, routes: { writer: ['a:m', 'b:m'] }, breaker: { failureThreshold: 2, cooldownMs: 30_000 }, clock });
    for (let i = 0; i < 5; i++) expect((await router.generate(request('writer'), ctx())).model).toBe('b:m');
    // Asked once, then left alone for the 5 s it asked for; its circuit never opened.
    expect(a.calls).toEqual(['a:m']);
    expect(router.breakers().a).toBe('closed');
    const waiting = await router.generate(request('writer'), ctx());
    expect(waiting.meta?.attempts).toEqual([
      { candidate: 'a:m', error: 'provider "a" asked not to be called for another 5000 ms', skipped: true, lastError: 'HTTP 429: slow down' },
      { candidate: 'b:m' },
    ]);
    clock.advance(4_999);
    await router.generate(request('writer'), ctx());
    expect(a.calls).toHaveLength(1);
    clock.advance(1);
    await router.generate(request('writer'), ctx());
    expect(a.calls).toHaveLength(2);
    expect(router.breakers().a).toBe('closed');
  });

  it('names each candidate\'s last real error, not just "circuit open", and keeps the first as the cause', async () => {
    const clock = manualClock(0);
    const refused = new TroupeError(ErrorCode.MODEL_FAILED, 'a: network error: fetch failed (connect ECONNREFUSED 127.0.0.1:9)', { retryable: true });
    const overloaded = transient('b: HTTP 503: overloaded');
    const a = stub('a', () => refused);
    const b = stub('b', () => overloaded);
    const router = createRouter({ providers: { a, b }, routes: { writer: ['a:m', 'b:m'] }, breaker: { failureThreshold: 1, cooldownMs: 1_000 }, clock });
    const first = await failure(router.generate(request('writer'), ctx()));
    expect(first.cause).toBe(refused);
    expect(first.retryAfterMs).toBeUndefined(); // they just failed: nothing says when to come back
    // Both circuits are open now: nothing is called, and the error still says what is wrong.
    const second = await failure(router.generate(request('writer'), ctx()));
    expect(second.message).toBe(
      'router "router" route "writer": every candidate failed (' +
        'a:m: circuit open for provider "a" (last error: a: network error: fetch failed (connect ECONNREFUSED 127.0.0.1:9)); ' +
        'b:m: circuit open for provider "b" (last error: b: HTTP 503: overloaded))',
    );
    expect(second.cause).toBe(refused);
    expect(second.retryAfterMs).toBe(1_000); // both circuits said when they will let a trial through
    expect([...a.calls, ...b.calls]).toEqual(['a:m', 'b:m']);
  });

  it('abandons a slow candidate after attemptTimeoutMs and stops at once when the caller aborts', async () => {
    const clock = manualClock(0);
    const hang = (_: ModelRequest, signal: AbortSignal) => new Promise<string>((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
    const a = stub('a', hang);
    const b = stub('b', () => 'b');
    const router = createRouter({ providers: { a, b }, routes: { r: ['a:m', 'b:m'] }, attemptTimeoutMs: 5000, clock });
    const pending = router.generate(request('r'), ctx());
    clock.advance(5000);
    const response = await pending;
    expect(response.model).toBe('b:m');
    expect(response.meta?.attempts).toEqual([{ candidate: 'a:m', error: 'no answer within 5000 ms' }, { candidate: 'b:m' }]);

    const controller = new AbortController();
    const stopping = router.generate(request('r'), { signal: controller.signal });
    const reason = new Error('run stopping');
    controller.abort(reason);
    await expect(stopping).rejects.toBe(reason);
    expect(b.calls).toHaveLength(1);
  });
});

describe('router over real HTTP', () => {
  let server: FakeLLMServer;
  beforeAll(async () => {
    server = await startFakeLLMServer();
  });
  afterAll(() => server.close());

  it('runs a crew on router:writer, falling back from a failing endpoint, and journals the served model', async () => {
    const KEY = 'sk-e2e-SECRET';
    server.fallback('/flaky/chat/completions', openai.error(503, 'upstream overloaded'));
    server.enqueue(
      '/v1/chat/completions',
      openai.completion({ content: 'Looking it up.', toolCalls: [{ id: 'call_1', name: 'lookup', arguments: '{"word":"actor"}' }] }),
      openai.completion({ content: 'Brief: actors talk by messages.' }),
    );
    const providers = {
      flaky: openAICompatible({ id: 'flaky', baseURL: `${server.url}/flaky`, apiKey: KEY }),
      openai: openAICompatible({ baseURL: `${server.url}/v1`, apiKey: KEY }),
    };
    const router = createRouter({ providers, routes: { writer: ['flaky:gpt-big', 'openai:gpt-test'] } });
    const lookup = tool({ name: 'lookup', description: 'Looks a word up.', input: z.object({ word: z.string() }), effect: 'read', run: ({ word }) => `${word}: sends messages` });
    const writers = crew({ id: 'writers', agents: [agent({ id: 'writer', role: 'writes', instructions: 'Write a brief.', model: 'router:writer', tools: [lookup] })] });

    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { ...providers, router } });
    const run = await node.run(writers, { input: 'brief on actors', runId: 'e2e-1' });
    const result = await run.result();
    expect(result).toMatchObject({ status: 'completed', output: 'Brief: actors talk by messages.' });

    // The tool result went back over the wire in OpenAI's format.
    const second = server.on('/v1/chat/completions')[1]!.body;
    expect(second.messages.slice(-2)).toEqual([
      { role: 'assistant', content: 'Looking it up.', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'lookup', arguments: '{"word":"actor"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: 'actor: sends messages' },
    ]);
    expect(server.on('/flaky/chat/completions').map((r) => r.body.model)).toEqual(['gpt-big', 'gpt-big']);

    const calls = (await createRunStore(storage).journal('e2e-1')).filter((e) => e.kind === 'model.call');
    expect(calls).toHaveLength(2);
    for (const entry of calls) {
      expect(entry.data).toMatchObject({
        model: 'openai:gpt-test',
        requested: 'router:writer',
        meta: {
          route: 'writer',
          requested: 'flaky:gpt-big',
          served: 'openai:gpt-test',
          reported: 'openai:gpt-test-0001',
          attempts: [{ candidate: 'flaky:gpt-big', error: 'flaky: HTTP 503: upstream overloaded' }, { candidate: 'openai:gpt-test' }],
        },
      });
    }
    expect(JSON.stringify(await createRunStore(storage).journal('e2e-1'))).not.toContain(KEY);
  });

  it('fails a run on a refused connection naming ECONNREFUSED, even after the circuit opened', async () => {
    // A port nothing listens on: bind one, then close it.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));

    const clock = steppingClock(0);
    const down = openAICompatible({ id: 'down', baseURL: `http://127.0.0.1:${port}/v1` });
    const router = createRouter({ providers: { down }, routes: { writer: ['down:gpt-test'] }, breaker: { failureThreshold: 2, cooldownMs: 10_000 }, clock });
    // Three attempts: two refused connections open the circuit, the third is refused by it.
    const writer = agent({ id: 'writer', role: 'writes', instructions: 'Write.', model: 'router:writer', retry: { maxAttempts: 3, initialDelayMs: 1, maxDelayMs: 1 } });
    await using storage = memoryStorage();
    await using node = await createNode({ storage, clock, models: { down, router } });
    const result = await (await node.run(crew({ id: 'w', agents: [writer], supervision: { maxRestarts: 0 } }), { input: 'x', runId: 'refused-1' })).settled();
    expect(router.breakers().down).toBe('open');
    expect(result.status).toBe('failed');
    expect(result.error?.details?.cause).toMatchObject({ code: 'RETRIES_EXHAUSTED' });
    expect(result.error?.message).toContain('gave up after 3 attempts: router "router" route "writer": every candidate failed (down:gpt-test: circuit open for provider "down"');
    expect(result.error?.message).toMatch(new RegExp(`last error: down: network error: fetch failed \\(connect ECONNREFUSED 127\\.0\\.0\\.1:${port}\\)`));
    // Two 1 ms backoffs; the last attempt found the circuit open and ended the retries.
    expect(clock.armed.map((t) => t.ms)).toEqual([1, 1]);
  });
});
