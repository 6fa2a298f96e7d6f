import { createActor } from 'xstate';
import { describe, expect, it } from 'vitest';
import { createNode, memoryStorage, scriptedModel, type ActorRuntime } from '../index.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';

/**
 * A crew builds its XState machines once and every run of it shares them: the machines hold
 * nothing of a run, and their actions reach the run they act in through the actor system.
 */
describe('machines shared by the runs of a crew', () => {
  it('are built once, and two runs going at the same time each act in their own run', async () => {
    const calls: string[] = [];
    const crew = twoAgentCrew({ calls });
    const stub = {} as ActorRuntime;
    expect(crew.createMachine(stub)).toBe(crew.createMachine({ ...stub }));

    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript }) } });
    const [a, b] = await Promise.all([node.run(crew, { input: 'brief me', runId: 'shared-a' }), node.run(crew, { input: 'brief me', runId: 'shared-b' })]);
    const [ra, rb] = await Promise.all([a.result(), b.result()]);
    expect(ra).toMatchObject({ status: 'completed', output: 'final: a brief about actor and state' });
    expect(rb).toMatchObject({ status: 'completed', output: 'final: a brief about actor and state' });
    // Each run's lookups ran once in that run: two each, four in all.
    expect(calls.sort()).toEqual(['actor', 'actor', 'state', 'state']);
    // Nothing of one run is in the other's checkpoints.
    for (const [runId, other] of [
      ['shared-a', 'shared-b'],
      ['shared-b', 'shared-a'],
    ] as const) {
      const events = (await node.history(runId)).map((entry) => JSON.stringify(entry));
      expect(events.length).toBeGreaterThan(0);
      expect(events.some((e) => e.includes(other))).toBe(false);
    }
  });

  it('refuse to act outside a run: an actor started without a node fails with a TypeError that says so', () => {
    const machine = twoAgentCrew().createMachine({} as ActorRuntime);
    const actor = createActor(machine, { input: { input: 'x' } });
    let error: unknown;
    actor.subscribe({ error: (e) => (error = e) });
    actor.start();
    expect(error).toBeInstanceOf(TypeError);
    expect((error as Error).message).toMatch(/outside a Troupe run/);
  });
});
