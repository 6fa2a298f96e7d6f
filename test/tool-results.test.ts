import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, memoryStorage, scriptedModel, tool } from '../index.js';
import type { ModelRequest } from '../core/model.js';

/** A tool returning `value`, and the run's second model request (which sees the result). */
async function resultSeenByModel(value: unknown) {
  const odd = tool({ name: 'odd', description: 'Returns something odd.', input: z.object({}), effect: 'read', run: () => value });
  const requests: ModelRequest[] = [];
  await using storage = memoryStorage();
  await using node = await createNode({
    storage,
    models: {
      scripted: scriptedModel({
        script: (req) => {
          requests.push(req);
          return req.messages.some((m) => m.role === 'tool') ? 'recovered' : { toolCalls: [{ name: 'odd', args: {} }] };
        },
      }),
    },
  });
  const run = await node.run(crew({ id: 'odd', agents: [agent({ id: 'a', role: 'a', instructions: 'a', model: 'scripted', tools: [odd] })] }), { input: 'go', runId: 'o1' });
  const result = await run.settled();
  return { result, tool: requests[1]?.messages.find((m) => m.role === 'tool') };
}

describe('tool results that are not JSON', () => {
  it.each([
    ['a function', () => 1, 'a function'],
    ['a symbol', Symbol('s'), 'a symbol'],
    ['a bigint', 10n, 'a bigint'],
    ['a nested function', { ok: true, later: { fn: () => 1 } }, 'a function at .later.fn'],
    ['a cycle', (() => { const o: Record<string, unknown> = {}; o.self = o; return o; })(), 'a cyclic structure at .self'],
  ])('%s goes back to the model as a tool error naming the tool and the type', async (_what, value, described) => {
    const { result, tool: message } = await resultSeenByModel(value);
    expect(result).toMatchObject({ status: 'completed', output: 'recovered' });
    expect(message).toMatchObject({ role: 'tool', name: 'odd', isError: true });
    expect(message!.content).toBe(`error: tool "odd" returned ${described}, which is not JSON; a tool must return a string or a JSON value`);
  });

  it('passes JSON values, dates and undefined through as before', async () => {
    const { tool: message } = await resultSeenByModel({ at: new Date(0), list: [1, 'two', null], nothing: undefined });
    expect(message).toMatchObject({ content: JSON.stringify({ at: new Date(0), list: [1, 'two', null] }) });
    expect(message!.isError).toBeUndefined();
  });
});
