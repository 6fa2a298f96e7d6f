import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, memoryStorage, scriptedModel, tool, type RunEvent } from '../index.js';
import { countingStorage } from '../bench/durable-step.js';

/**
 * What a durable step costs in bytes (keys + values of every batch, counted at the storage;
 * never time). Kernel v2 writes per checkpoint only the actors that changed and the new
 * messages of a conversation, so a step costs the same at step 2,000 as at step 10, and
 * idle agents cost nothing. The old layout wrote the whole deep snapshot at every
 * checkpoint: 55 KB a step at step 100, 1.16 MB at step 2,000.
 */

const noop = tool({ name: 'noop', description: 'Returns its argument.', input: z.object({ i: z.number() }), effect: 'read', run: ({ i }) => ({ ok: i }) });

/**
 * A crew whose agent `worker` makes `steps` steps (a model call and a `noop` tool call
 * each, then a final answer), next to `idle` agents that are never given work.
 */
function stepCrew(steps: number, idle: number) {
  const script = {
    worker: [...Array.from({ length: steps - 1 }, (_, i) => ({ text: `step ${i + 1}`, toolCalls: [{ name: 'noop', args: { i } }] })), `done after ${steps} steps`],
  };
  const others = Array.from({ length: idle }, (_, i) => agent({ id: `idle${i}`, role: 'waits', instructions: 'Wait.', model: 'scripted' }));
  const def = crew({
    id: `cost${idle}`,
    // Only the entry agent works; it hands off to nobody.
    process: { type: 'handoff', entry: 'worker', routes: { worker: [] } },
    agents: [agent({ id: 'worker', role: 'steps', instructions: 'Take steps.', model: 'scripted', tools: [noop], maxSteps: steps + 10 }), ...others],
  });
  return { def, script };
}

/**
 * Runs the crew to completion on a counting memoryStorage and returns the bytes of each
 * step: `perStep[k]` is everything written from the worker's model call k+1 up to its
 * model call k+2 (that step's checkpoints: the call, the tool's intent and result).
 */
async function bytesPerStep(steps: number, idle: number) {
  const { def, script } = stepCrew(steps, idle);
  const { storage, stats } = countingStorage(memoryStorage());
  await using node = await createNode({ storage, models: { scripted: scriptedModel({ script, latencyMs: 0 }) } });
  const atCall: number[] = [];
  const packedAt: number[] = [];
  node.subscribe((event: RunEvent) => {
    if (event.type === 'model.call' && event.actor === 'worker') {
      atCall.push(stats.bytes);
      packedAt.push(stats.packBytes);
    }
  });
  const run = await node.run(def, { input: 'go', runId: `cost-${idle}` });
  expect((await run.result()).output).toBe(`done after ${steps} steps`);
  expect(atCall).toHaveLength(steps);
  const perStep = atCall.slice(1).map((bytes, k) => bytes - atCall[k]!);
  const packing = packedAt.slice(1).map((bytes, k) => bytes - packedAt[k]!);
  return { perStep, packing, total: stats.bytes, batches: stats.batches };
}

describe('persistence cost', () => {
  it('the bytes written per step of a 2,000-step run stay under a fixed bound', async () => {
    const { perStep, packing } = await bytesPerStep(2_000, 0);
    expect(perStep).toHaveLength(1_999);
    // Step 10 of the run (index 9: from model call 10 to model call 11), before any packing.
    expect(packing.slice(0, 20).every((b) => b === 0)).toBe(true);
    const early = perStep[9]!;
    // A step is small to begin with: a bound in the low KB, against 55 KB at step 100 before.
    expect(early).toBeLessThan(8 * 1024);
    const bound = 1.5 * early + 512;
    const last = perStep.slice(-300);
    const lastPacking = packing.slice(-300);
    for (const [i, bytes] of last.entries()) {
      expect(bytes - lastPacking[i]!, `step ${perStep.length - 300 + i + 1} wrote ${bytes} bytes; step 10 wrote ${early}`).toBeLessThan(bound);
    }
    // Packing rewrites each conversation entry once, in segments of a fixed number of
    // entries: it happens, and it does not grow with the conversation either.
    const packs = packing.filter((b) => b > 0);
    expect(packs.length).toBeGreaterThan(10);
    expect(Math.max(...packs)).toBeLessThan(1.2 * packs[0]!);
    const mean = last.reduce((a, b) => a + b, 0) / last.length;
    expect(mean).toBeLessThan(1.5 * early + 512);
    console.info(`persistence cost: step 10 ${early} B, step 2,000 ${perStep.at(-1)} B, bound ${bound} B, packing ${packs[0]} B every ${Math.round(packing.length / packs.length)} steps`);
    // ~11 s of CPU; the margin is for a shared machine, not for the bytes.
  }, 90_000);

  it('a crew of 200 idle agents and 1 working agent writes per step at most 1.5x what a crew of 2 writes', async () => {
    const steps = 40;
    const small = await bytesPerStep(steps, 1);
    const large = await bytesPerStep(steps, 200);
    // Steps 5 to 39: the first checkpoints write every actor once, whatever the crew size.
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const smallStep = mean(small.perStep.slice(4));
    const largeStep = mean(large.perStep.slice(4));
    expect(largeStep).toBeLessThanOrEqual(1.5 * smallStep);
    for (const [k, bytes] of large.perStep.slice(4).entries()) expect(bytes, `step ${k + 5}`).toBeLessThanOrEqual(1.5 * small.perStep[k + 4]!);
    console.info(`persistence cost: ${smallStep.toFixed(0)} B a step with 2 agents, ${largeStep.toFixed(0)} B with 201`);
  });
});
