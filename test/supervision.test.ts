import { describe, expect, it } from 'vitest';
import { agent, createNode, crew, memoryStorage, scriptedModel, TroupeError, type CrewOptions, type RunEvent } from '../index.js';
import type { Script } from '../models/scripted.js';
import { steppingClock } from './helpers/stepping-clock.js';

const member = (id: string) => agent({ id, role: id, instructions: id, model: 'scripted', retry: { maxAttempts: 1, initialDelayMs: 1, maxDelayMs: 1 } });
/** A transient failure that outlasts the agent's one attempt, so the crew must supervise. */
const broken = (what: string) => {
  throw new TroupeError('MODEL_FAILED', `${what} is broken`, { retryable: true });
};
/** A failure that no retry and no restart can fix (a 404, say). */
const final = (what: string) => {
  throw new TroupeError('MODEL_FAILED', `${what}: HTTP 404: no such model`, { retryable: false, details: { status: 404 } });
};

async function run(options: Pick<CrewOptions, 'agents' | 'process' | 'supervision'>, script: Script) {
  await using storage = memoryStorage();
  await using node = await createNode({ storage, models: { scripted: scriptedModel({ script }) } });
  const tasks: string[] = [];
  node.subscribe((e: RunEvent) => e.type === 'message' && e.messageType === 'task' && tasks.push(e.to.split('/')[1]!));
  const handle = await node.run(crew({ id: 's', ...options }), { input: 'go', runId: 'sv' });
  const result = await handle.settled();
  const snapshot = (await node.history('sv')).at(-1)!;
  return { result, tasks, snapshot };
}

describe('supervision', () => {
  it('oneForOne restarts the failed agent after a backoff and the run goes on', async () => {
    let failures = 1;
    const script: Script = (req) => (req.agent === 'b' && failures-- > 0 ? broken('b') : `${req.agent} ok`);
    const { result, tasks } = await run({ agents: [member('a'), member('b'), member('c')], supervision: { strategy: 'oneForOne', initialDelayMs: 1, maxRestarts: 2 } }, script);
    expect(result).toMatchObject({ status: 'completed', output: 'c ok' });
    expect(tasks).toEqual(['a', 'b', 'b', 'c']);
  });

  it('oneForAll resets every agent and starts the process over', async () => {
    let failures = 1;
    const script: Script = (req) => (req.agent === 'b' && failures-- > 0 ? broken('b') : `${req.agent} ok`);
    const { result, tasks } = await run({ agents: [member('a'), member('b')], supervision: { strategy: 'oneForAll', initialDelayMs: 1, maxRestarts: 2 } }, script);
    expect(result).toMatchObject({ status: 'completed', output: 'b ok' });
    expect(tasks).toEqual(['a', 'b', 'a', 'b']);
  });

  it('escalates to the crew when the restart intensity is exceeded, ending the run with the cause', async () => {
    const script: Script = (req) => (req.agent === 'b' ? broken('b') : 'ok');
    const { result, tasks } = await run({ agents: [member('a'), member('b')], supervision: { maxRestarts: 2, withinMs: 60_000, initialDelayMs: 1 } }, script);
    expect(tasks).toEqual(['a', 'b', 'b', 'b']);
    expect(result.status).toBe('failed');
    expect(result.error).toMatchObject({ code: 'SUPERVISION_ESCALATED', details: { agent: 'b', cause: { code: 'RETRIES_EXHAUSTED', details: { last: { code: 'MODEL_FAILED' } } } } });
    expect(result.error?.message).toBe('b failed and was not restarted (restart intensity exceeded: 2 restarts within 60000 ms): agent "b" gave up after 1 attempts: b is broken');
  });

  it('escalates an error that cannot succeed on a retry at once, with the reason, never restarting', async () => {
    const script: Script = (req) => (req.agent === 'b' ? final('b') : 'ok');
    const { result, tasks, snapshot } = await run({ agents: [member('a'), member('b')], supervision: { maxRestarts: 3, initialDelayMs: 1 } }, script);
    expect(tasks).toEqual(['a', 'b']);
    expect(result.status).toBe('failed');
    expect(result.error).toMatchObject({ code: 'SUPERVISION_ESCALATED', details: { agent: 'b', cause: { code: 'MODEL_FAILED', retryable: false } } });
    expect(result.error?.message).toBe('b failed and was not restarted (MODEL_FAILED is not retryable, so a restart cannot fix it): b: HTTP 404: no such model');
    expect(snapshot.states.b).toBe('failed');
  });

  it('restarts no sooner than the failed call asked (Retry-After), on the injected clock', async () => {
    const clock = steppingClock(1_000);
    let limited = 1;
    const script: Script = (req) => {
      if (req.agent === 'b' && limited-- > 0) throw new TroupeError('MODEL_FAILED', 'HTTP 429: slow down', { retryable: true, retryAfterMs: 5_000 });
      return `${req.agent} ok`;
    };
    await using storage = memoryStorage();
    await using node = await createNode({ storage, clock, models: { scripted: scriptedModel({ script }) } });
    const team = crew({ id: 's', agents: [member('a'), member('b')], supervision: { initialDelayMs: 1, maxRestarts: 2 } });
    const result = await (await node.run(team, { input: 'go', runId: 'sv-ra' })).result();
    expect(result.output).toBe('b ok');
    // The only wait: the crew's restart of b, 5 s (not its 1 ms backoff) after b failed.
    expect(clock.armed).toEqual([{ at: 1_000, ms: 5_000 }]);
  });

  it('escalates a worker failure to its manager, whose model decides what to do', async () => {
    const seen: string[] = [];
    const script: Script = (req) => {
      if (req.agent === 'worker') return broken('worker');
      const last = req.messages.at(-1)!;
      if (last.role === 'tool') return (seen.push(last.content), 'finished without the worker');
      return { toolCalls: [{ name: 'delegate', args: { agent: 'worker', task: 'do it' } }] };
    };
    const { result, tasks } = await run({ agents: [member('boss'), member('worker')], process: { type: 'hierarchical', manager: 'boss' }, supervision: { maxRestarts: 1, initialDelayMs: 1 } }, script);
    expect(result).toMatchObject({ status: 'completed', output: 'finished without the worker' });
    expect(tasks).toEqual(['boss', 'worker', 'worker']);
    expect(seen[0]).toMatch(/^error: worker failed: worker failed and was not restarted \(restart intensity exceeded/);
  });

  it('keeps failures as data in the snapshot, never as unhandled rejections', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      let failures = 1;
      const script: Script = (req) => (req.agent === 'a' && failures-- > 0 ? broken('a') : 'ok');
      const { result } = await run({ agents: [member('a')], supervision: { initialDelayMs: 1 } }, script);
      expect(result.status).toBe('completed');
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
