import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, ErrorCode, isTroupeError, memoryStorage, scriptedModel, tool, TroupeError, type RunEvent } from '../index.js';
import { manualClock } from '../core/clock.js';
import type { Script } from '../models/scripted.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';
import { steppingClock } from './helpers/stepping-clock.js';

async function runPair(script: Script, crewOptions: Parameters<typeof twoAgentCrew>[0] = {}) {
  await using storage = memoryStorage();
  await using node = await createNode({ storage, models: { scripted: scriptedModel({ script }) } });
  const events: RunEvent[] = [];
  node.subscribe((e) => events.push(e));
  const run = await node.run(twoAgentCrew(crewOptions), { input: 'task', runId: 'a1' });
  return { result: await run.settled(), events };
}

describe('agent', () => {
  it('recovers from transient model failures by retrying with backoff', async () => {
    const { result, events } = await runPair({ researcher: [{ text: 'ok', failFirst: 2 }], writer: ['written'] });
    expect(result.status).toBe('completed');
    expect(result.output).toBe('written');
    const researcher = events.filter((e) => e.type === 'state' && e.actor === 'researcher').map((e) => e.type === 'state' && e.state);
    expect(researcher).toEqual(['idle', 'planning', 'recovering', 'planning', 'recovering', 'planning', 'done']);
    expect(events.filter((e) => e.type === 'model.error')).toHaveLength(2);
  });

  it('fails with RETRIES_EXHAUSTED naming the last error when retries run out', async () => {
    const { result } = await runPair({ researcher: [{ text: 'never', failFirst: 10 }], writer: ['unused'] });
    expect(result.status).toBe('failed');
    expect(result.error).toMatchObject({ code: 'SUPERVISION_ESCALATED', details: { agent: 'researcher', cause: { code: 'RETRIES_EXHAUSTED', details: { attempts: 3 } } } });
    expect(result.error?.message).toMatch(/gave up after 3 attempts: scripted transient failure 3\/10/);
  });

  it('fails at once on a non-retryable error (script exhausted)', async () => {
    const { result, events } = await runPair({ researcher: [], writer: [] });
    expect(result.error).toMatchObject({ details: { cause: { code: 'MODEL_FAILED' } } });
    expect(result.error?.message).toMatch(/no turn 1 for agent "researcher"/);
    expect(events.filter((e) => e.type === 'model.error')).toHaveLength(1);
  });

  it('never retries an error whose code says it cannot succeed, even unmarked (MODEL_NOT_FOUND)', async () => {
    const script: Script = (request) => {
      if (request.agent === 'researcher') throw new TroupeError(ErrorCode.MODEL_NOT_FOUND, 'the provider has no model "gpt-retired"');
      return 'unused';
    };
    const { result, events } = await runPair(script, { crew: { supervision: { maxRestarts: 3, initialDelayMs: 1 } } });
    expect(events.filter((e) => e.type === 'model.error')).toHaveLength(1);
    expect(result.error).toMatchObject({ code: 'SUPERVISION_ESCALATED', details: { cause: { code: 'MODEL_NOT_FOUND', retryable: false } } });
    expect(result.error?.message).toMatch(/not retryable.*no model "gpt-retired"/);
  });

  it('fails with MAX_STEPS when the model keeps calling tools', async () => {
    const loop = { text: 'again', toolCalls: [{ name: 'lookup', args: { word: 'x' } }] };
    const { result } = await runPair({ researcher: [loop, loop, loop, loop], writer: [] }, { researcher: { maxSteps: 3 } });
    expect(result.error).toMatchObject({ details: { cause: { code: 'MAX_STEPS' } } });
  });

  it('feeds unknown tools and invalid arguments back to the model as tool errors', async () => {
    const seen: string[] = [];
    const script: Script = (request) => {
      if (request.agent === 'writer') return 'done';
      const last = request.messages.at(-1)!;
      if (last.role === 'tool') seen.push(last.content);
      return [
        { toolCalls: [{ name: 'nope', args: {} }] },
        { toolCalls: [{ name: 'lookup', args: { word: 42 } }] },
        // Argument text as a small model sends it: broken JSON, then JSON that is no object.
        { toolCalls: [{ name: 'lookup', args: '{"word": "actor"' }] },
        { toolCalls: [{ name: 'lookup', args: '"actor"' }] },
        'recovered',
      ][request.messages.filter((m) => m.role === 'assistant').length]!;
    };
    const { result } = await runPair(script);
    expect(result.status).toBe('completed');
    expect(seen[0]).toMatch(/unknown tool "nope"; available: lookup/);
    expect(seen[1]).toMatch(/invalid arguments for lookup: word: .*expected string/i);
    expect(seen[2]).toMatch(/^error: invalid arguments for lookup: not valid JSON \(.+\); received "\{\\"word\\": \\"actor\\""$/);
    expect(seen[3]).toBe('error: invalid arguments for lookup: must be a JSON object, got a string; received "\\"actor\\""');
  });

  it('passes an abort signal and a stable idempotency key into tools', async () => {
    const contexts: Array<{ key: string; aborted: boolean; callId: string }> = [];
    const probe = tool({
      name: 'probe',
      description: 'records its context',
      input: z.object({}),
      effect: 'idempotent',
      run: (_args, ctx) => {
        contexts.push({ key: ctx.idempotencyKey, aborted: ctx.signal.aborted, callId: ctx.callId });
        return 'ok';
      },
    });
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: { solo: [{ toolCalls: [{ name: 'probe', args: {} }] }, 'fin'] } }) } });
    const run = await node.run(crew({ id: 'one', agents: [agent({ id: 'solo', role: 'r', instructions: 'i', model: 'scripted', tools: [probe] })] }), { input: 'go', runId: 'p1' });
    expect((await run.result()).output).toBe('fin');
    expect(contexts).toEqual([{ key: 'p1:solo/t1/s1/tool/call_0_0', aborted: false, callId: 'solo/t1/s1/tool/call_0_0' }]);
  });

  it('jitters retry backoff within its bounds, reproducibly for a run, differently for another', async () => {
    const waits = async (runId: string) => {
      const clock = steppingClock(0);
      await using storage = memoryStorage();
      const script = { researcher: [{ text: 'ok', failFirst: 2 }], writer: ['w'] };
      await using node = await createNode({ storage, clock, models: { scripted: scriptedModel({ script }) } });
      // The default policy: 200 ms doubling, jitter 0.5.
      const run = await node.run(twoAgentCrew({ researcher: { retry: {} } }), { input: 'x', runId });
      expect((await run.result()).output).toBe('w');
      return clock.armed.map((t) => t.ms);
    };
    const first = await waits('jit-1');
    expect(first).toHaveLength(2);
    expect(first[0]).toBeGreaterThanOrEqual(100);
    expect(first[0]).toBeLessThanOrEqual(200);
    expect(first[1]).toBeGreaterThanOrEqual(200);
    expect(first[1]).toBeLessThanOrEqual(400);
    expect(await waits('jit-1')).toEqual(first);
    expect(await waits('jit-2')).not.toEqual(first);
  });

  it('keeps a retry deadline across a restore instead of restarting the backoff', async () => {
    const clock = manualClock(1_000);
    await using storage = memoryStorage();
    const script = { researcher: [{ text: 'late', failFirst: 1 }], writer: ['w'] };
    // Without jitter, so the stored deadline is exactly 10 s away.
    const slowRetry = { researcher: { retry: { initialDelayMs: 10_000, maxDelayMs: 10_000, jitter: 0 } } };
    const first = await createNode({ storage, clock, models: { scripted: scriptedModel({ script }) } });
    const reachedRecovering = new Promise<void>((resolve) => first.subscribe((e) => e.type === 'state' && e.state === 'recovering' && resolve()));
    await first.run(twoAgentCrew(slowRetry), { input: 'x', runId: 't1' });
    await reachedRecovering;
    await first.close();
    clock.advance(9_000); // the process was down for 9 s of the 10 s backoff
    const models = { scripted: scriptedModel({ script: { researcher: ['late'], writer: ['w'] } }) };
    await using second = await createNode({ storage, clock, models, crews: [twoAgentCrew(slowRetry)] });
    const run = second.get('t1')!;
    // The restored backoff re-arms for the remaining 1 s of its stored deadline, not 10 s.
    expect(clock.pending).toBe(1);
    clock.advance(999);
    expect(clock.pending).toBe(1);
    expect(run.status).toBe('running');
    clock.advance(1);
    expect((await run.result()).output).toBe('w');
  });

  it('times a slow model call out, retries it, and keeps the deadline across a restore', async () => {
    const clock = manualClock(0);
    await using storage = memoryStorage();
    const def = () => twoAgentCrew({ researcher: { timeoutMs: 5_000, retry: { maxAttempts: 2, initialDelayMs: 1, maxDelayMs: 1 } } });
    // The model answers after 60 s of clock time: the 5 s timeout fires first.
    const slow = { scripted: scriptedModel({ script: pairScript, latencyMs: 60_000, clock }) };
    const first = await createNode({ storage, clock, models: slow });
    await first.run(def(), { input: 'x', runId: 'to1' });
    await new Promise<void>((resolve) => first.subscribe((e) => e.type === 'checkpoint' && resolve()));
    clock.advance(3_000);
    await first.close();
    // Down for 1 s; 1 s of the 5 s deadline is left after the restart, not 5.
    clock.advance(1_000);
    const events: RunEvent[] = [];
    await using second = await createNode({ storage, clock, models: slow, crews: [def()], resume: false });
    second.subscribe((e) => events.push(e));
    await second.resumeAll();
    // States of the researcher after its first `recovering`, in order.
    const after = () => {
      const states = events.filter((e) => e.type === 'state' && e.actor === 'researcher').map((e) => (e as { state: string }).state);
      return states.slice(states.indexOf('recovering'));
    };
    const reached = (state: string, count: number) =>
      new Promise<void>((resolve) => {
        const check = () => after().filter((x) => x === state).length >= count && after()[0] === 'recovering' && resolve();
        check();
        second.subscribe(check);
      });
    clock.advance(999);
    expect(events.some((e) => e.type === 'state' && e.state === 'recovering')).toBe(false);
    clock.advance(1);
    await reached('recovering', 1);
    // The retry (after a 1 ms backoff) times out too: the agent gives up, the timeout as the reason.
    clock.advance(1);
    await reached('planning', 1);
    clock.advance(5_000);
    const result = await second.get('to1')!.settled();
    expect(result.error).toMatchObject({ details: { cause: { code: 'RETRIES_EXHAUSTED', details: { last: { code: 'TIMEOUT' } } } } });
  });

  it('rejects definitions that break the rules with TypeErrors', () => {
    expect(() => agent({ id: '1x', role: '', instructions: '', model: 'scripted' })).toThrow(/agent id "1x" must match/);
    const t = tool({ name: 'a', description: '', input: z.object({}), effect: 'read', run: () => 1 });
    expect(() => agent({ id: 'x', role: '', instructions: '', model: 'scripted', tools: [t, t] })).toThrow(/two tools named "a"/);
    expect(() => tool({ name: 'u', description: '', input: z.object({}), effect: 'compensatable', run: () => 1 })).toThrow(/must define compensate/);
    expect(() => agent({ id: 'x', role: '', instructions: '', model: 'scripted', retry: { initialDelayMs: 10, maxDelayMs: 5 } })).toThrow(/must not exceed/);
    expect(() => agent({ id: 'x', role: '', instructions: '', model: 'scripted', retry: { jitter: 2 } })).toThrow(/agent "x": retry.jitter must be a fraction between 0 and 1/);
    expect(() => agent({ id: 'x', role: '', instructions: '', model: 'scripted', retry: { maxRetryAfterMs: -1 } })).toThrow(/retry.maxRetryAfterMs must be a non-negative number/);
    expect(() => crew({ id: 'c', agents: [agent({ id: 'x', role: '', instructions: '', model: 'scripted' })], supervision: { factor: 0 } })).toThrow(/supervision.factor must be a number of at least 1/);
    expect(() => new TroupeError(ErrorCode.MODEL_FAILED, 'x', { retryAfterMs: -5 })).toThrow(/retryAfterMs must be a non-negative number of milliseconds, got -5/);
    expect(() => crew({ id: 'c', agents: [] })).toThrow(/at least one agent/);
    const a = agent({ id: 'crew', role: '', instructions: '', model: 'scripted' });
    expect(() => crew({ id: 'c', agents: [a] })).toThrow(/reserved/);
    expect(isTroupeError(new TypeError('x'))).toBe(false);
  });
});
