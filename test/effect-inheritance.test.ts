import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, memoryStorage, scriptedModel, tool, type CrewOptions, type ToolEffect } from '../index.js';
import type { Script } from '../models/scripted.js';
import { createRunStore } from '../core/run-store.js';

/**
 * A supervision restart must never execute again an effect a failed attempt already had:
 * the restarted attempt inherits it (core/effect-inheritance.ts).
 */

/** A tool of the given effect kind that counts its executions and compensations. */
function countingTool(effect: ToolEffect) {
  const counts = { runs: 0, compensations: 0, keys: [] as string[] };
  const t = tool({
    name: 'send',
    description: 'Sends a message to someone.',
    input: z.object({ to: z.string() }),
    effect,
    run: ({ to }, { idempotencyKey }) => {
      counts.runs += 1;
      counts.keys.push(idempotencyKey);
      return { sent: to, n: counts.runs };
    },
    ...(effect === 'compensatable' ? { compensate: () => void (counts.compensations += 1) } : {}),
  });
  return { tool: t, counts };
}

// One attempt per step: a transient failure fails the task at once, and supervision restarts it.
const retry = { maxAttempts: 1, initialDelayMs: 1, maxDelayMs: 1 };

async function runCrew(options: Pick<CrewOptions, 'agents' | 'process' | 'supervision'>, script: Script) {
  await using storage = memoryStorage();
  await using node = await createNode({ storage, models: { scripted: scriptedModel({ script }) } });
  const run = await node.run(crew({ id: 'inherit', ...options }), { input: 'go', runId: 'r1' });
  const result = await run.settled();
  const ledger = await createRunStore(storage).ledger('r1');
  const journal = await createRunStore(storage).journal('r1');
  return { result, ledger, journal };
}

const EFFECTS: ToolEffect[] = ['idempotent', 'compensatable', 'irreversible'];

describe('effects across supervision restarts', () => {
  it.each(EFFECTS)('oneForOne: a %s call the failed attempt completed is reused by the restarted attempt, not executed again', async (effect) => {
    const { tool: send, counts } = countingTool(effect);
    // Turn 1 sends; turn 2 fails once (retries exhausted), so the task fails after the effect.
    const script: Script = { a: [{ toolCalls: [{ name: 'send', args: { to: 'bob' } }] }, { text: 'done', failFirst: 1 }] };
    const { result, ledger, journal } = await runCrew(
      { agents: [agent({ id: 'a', role: 'a', instructions: 'a', model: 'scripted', tools: [send], retry })], supervision: { strategy: 'oneForOne', initialDelayMs: 1, maxRestarts: 2 } },
      script,
    );
    expect(result).toMatchObject({ status: 'completed', output: 'done' });
    expect(counts.runs).toBe(1);
    expect(counts.compensations).toBe(0);
    const calls = ledger.filter((e) => e.kind === 'tool');
    expect(calls.map((e) => e.callId)).toEqual(['a/t1/s1/tool/call_0_0', 'a/t2/s1/tool/call_0_0']);
    // The restarted call records where its outcome came from, with the original key.
    expect(calls[1]).toMatchObject({ status: 'done', inheritedFrom: 'a/t1/s1/tool/call_0_0', idempotencyKey: calls[0]!.idempotencyKey, effect });
    expect((calls[1]!.result as { content: string }).content).toBe(JSON.stringify({ sent: 'bob', n: 1 }));
    expect(journal.filter((e) => e.kind === 'tool.call').map((e) => e.data.inheritedFrom)).toEqual([undefined, 'a/t1/s1/tool/call_0_0']);
  });

  it('oneForOne: a read call is not an effect and runs again', async () => {
    const { tool: send, counts } = countingTool('read');
    const script: Script = { a: [{ toolCalls: [{ name: 'send', args: { to: 'bob' } }] }, { text: 'done', failFirst: 1 }] };
    const { result } = await runCrew({ agents: [agent({ id: 'a', role: 'a', instructions: 'a', model: 'scripted', tools: [send], retry })], supervision: { initialDelayMs: 1 } }, script);
    expect(result.status).toBe('completed');
    expect(counts.runs).toBe(2);
  });

  it('oneForOne: different arguments are a different call and run', async () => {
    const { tool: send, counts } = countingTool('irreversible');
    let attempt = 0;
    const script: Script = (req) => {
      const turn = req.messages.filter((m) => m.role === 'assistant').length;
      if (turn === 0) return { toolCalls: [{ name: 'send', args: { to: attempt++ === 0 ? 'bob' : 'carol' } }] };
      return attempt === 1 ? { text: 'done', failFirst: 1 } : 'done';
    };
    const { result, ledger } = await runCrew({ agents: [agent({ id: 'a', role: 'a', instructions: 'a', model: 'scripted', tools: [send], retry })], supervision: { initialDelayMs: 1 } }, script);
    expect(result.status).toBe('completed');
    expect(counts.runs).toBe(2);
    expect(ledger.filter((e) => e.kind === 'tool').every((e) => e.inheritedFrom === undefined)).toBe(true);
  });

  it('oneForOne: one recorded effect is inherited once; a second identical call in the new attempt runs', async () => {
    const { tool: send, counts } = countingTool('irreversible');
    const script: Script = {
      a: [
        { toolCalls: [{ name: 'send', args: { to: 'bob' } }] },
        { text: 'done', failFirst: 1, toolCalls: [{ name: 'send', args: { to: 'bob' } }] },
        'done',
      ],
    };
    const { result, ledger } = await runCrew({ agents: [agent({ id: 'a', role: 'a', instructions: 'a', model: 'scripted', tools: [send], retry })], supervision: { initialDelayMs: 1 } }, script);
    expect(result).toMatchObject({ status: 'completed', output: 'done' });
    // Attempt 1 sent once; attempt 2 asked twice: the first is the inherited one, the second is new.
    expect(counts.runs).toBe(2);
    expect(ledger.filter((e) => e.inheritedFrom).map((e) => e.callId)).toEqual(['a/t2/s1/tool/call_0_0']);
  });

  it.each(EFFECTS)('oneForAll: a %s call of an agent that had finished is not executed again when the process starts over', async (effect) => {
    const { tool: send, counts } = countingTool(effect);
    const script: Script = {
      a: [{ toolCalls: [{ name: 'send', args: { to: 'bob' } }] }, 'a done'],
      b: [{ text: 'b done', failFirst: 1 }],
    };
    const { result, ledger } = await runCrew(
      {
        agents: [agent({ id: 'a', role: 'a', instructions: 'a', model: 'scripted', tools: [send], retry }), agent({ id: 'b', role: 'b', instructions: 'b', model: 'scripted', retry })],
        supervision: { strategy: 'oneForAll', initialDelayMs: 1, maxRestarts: 2 },
      },
      script,
    );
    expect(result).toMatchObject({ status: 'completed', output: 'b done' });
    expect(counts.runs).toBe(1);
    expect(counts.compensations).toBe(0);
    const inherited = ledger.filter((e) => e.inheritedFrom);
    expect(inherited).toHaveLength(1);
    expect(inherited[0]!.inheritedFrom).toBe('a/t1/s1/tool/call_0_0');
  });

  it('a manager re-delegating after an escalation does not make the worker repeat its irreversible call', async () => {
    const { tool: send, counts } = countingTool('irreversible');
    let delegations = 0;
    const script: Script = (req) => {
      const turn = req.messages.filter((m) => m.role === 'assistant').length;
      if (req.agent === 'worker') return turn === 0 ? { toolCalls: [{ name: 'send', args: { to: 'bob' } }] } : delegations === 1 ? { text: 'sent', failFirst: 1 } : 'sent';
      const last = req.messages.at(-1)!;
      if (last.role === 'tool' && !last.isError) return 'all sent';
      delegations += 1;
      return { toolCalls: [{ name: 'delegate', args: { agent: 'worker', task: 'send to bob' } }] };
    };
    const { result } = await runCrew(
      {
        agents: [agent({ id: 'boss', role: 'boss', instructions: 'boss', model: 'scripted', retry }), agent({ id: 'worker', role: 'w', instructions: 'w', model: 'scripted', tools: [send], retry })],
        process: { type: 'hierarchical', manager: 'boss' },
        // No restarts: the worker's failure escalates to the boss, who delegates again.
        supervision: { maxRestarts: 0 },
      },
      script,
    );
    expect(delegations).toBe(2);
    expect(result).toMatchObject({ status: 'completed', output: 'all sent' });
    expect(counts.runs).toBe(1);
  });
});
