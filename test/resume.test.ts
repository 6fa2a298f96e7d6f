import { describe, expect, it } from 'vitest';
import { createNode, scriptedModel, type ModelProvider } from '../index.js';
import { layout } from '../core/layout.js';
import { createRunStore } from '../core/run-store.js';
import type { KeyRange } from '../core/storage.js';
import { levelStorage } from '../storage/level.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';
import { tempDir } from './helpers/temp.js';

/** Wraps a provider to count the calls that really reach it. */
function counting(provider: ModelProvider) {
  const calls: string[] = [];
  const wrapped: ModelProvider = { id: provider.id, generate: (req, ctx) => (calls.push(`${req.agent}#${req.step}`), provider.generate(req, ctx)) };
  return { wrapped, calls };
}

describe('resume', () => {
  it('resumes unfinished runs when a node starts on the same LevelDB, without repeating checkpointed calls', async () => {
    await using dir = await tempDir();
    const tools: string[] = [];

    const scripted = scriptedModel({ script: pairScript });
    // The researcher's third call never answers: the node closes while it is in flight.
    const hanging: ModelProvider = {
      id: 'scripted',
      generate: (req, ctx) =>
        req.agent === 'researcher' && req.step === 3
          ? new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true }))
          : scripted.generate(req, ctx),
    };
    const first = counting(hanging);
    {
      await using storage = await levelStorage({ path: dir.path });
      await using node = await createNode({ storage, models: { scripted: first.wrapped } });
      const run = await node.run(twoAgentCrew({ calls: tools }), { input: 'brief me', runId: 'res-1' });
      // Stop right after the researcher's second model call has been checkpointed.
      await new Promise<void>((resolve) => {
        const off = run.subscribe((e) => {
          if (e.type === 'checkpoint' && first.calls.length === 3) {
            off();
            resolve();
          }
        });
      });
    }
    // The third call was in flight when the node closed: it was cut off, not recorded.
    expect(first.calls).toEqual(['researcher#1', 'researcher#2', 'researcher#3']);

    const second = counting(scriptedModel({ script: pairScript }));
    await using storage = await levelStorage({ path: dir.path });
    await using node = await createNode({ storage, models: { scripted: second.wrapped }, crews: [twoAgentCrew({ calls: tools })] });
    const run = node.get('res-1');
    expect(run).toBeDefined();
    const result = await run!.result();
    expect(result.output).toBe('final: a brief about actor and state');
    expect(second.calls).toEqual(['researcher#3', 'writer#1']);
    // Each lookup ran once: a tool whose result was checkpointed is never re-run.
    expect(tools).toEqual(['actor', 'state']);

    const store = createRunStore(storage);
    const record = await store.requireRun('res-1');
    expect(record).toMatchObject({ status: 'completed', resumes: 1 });
    const checkpoints = await store.checkpointStates('res-1', 'crew');
    expect(checkpoints.map((c) => c.seq)).toEqual(checkpoints.map((_, i) => i + 1));
    expect(await store.latestCheckpoint('res-1')).toMatchObject({ schemaVersion: 2, machine: { id: 'pair', version: '1' } });
  });

  it('refuses to resume a run checkpointed by another machine version, leaving it untouched', async () => {
    await using dir = await tempDir();
    await using storage = await levelStorage({ path: dir.path });
    {
      await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript, latencyMs: 10_000 }) } });
      await node.run(twoAgentCrew(), { input: 'x', runId: 'v1' });
    }
    const store = createRunStore(storage);
    const before = await store.latestCheckpoint('v1');
    await using node = await createNode({ storage, resume: false, models: { scripted: scriptedModel({ script: pairScript }) } });
    const bumped = { ...twoAgentCrew(), version: '2' };
    await expect(node.resume('v1', bumped)).rejects.toThrow(/checkpointed by pair@1 .* this code is pair@2/);
    expect(await store.latestCheckpoint('v1')).toEqual(before);
    expect((await store.requireRun('v1')).status).toBe('running');
  });

  it('reads the newest manifest of a run once to resume it: the version check before the claim and the rebuild share it', async () => {
    await using dir = await tempDir();
    await using disk = await levelStorage({ path: dir.path });
    {
      await using node = await createNode({ storage: disk, models: { scripted: scriptedModel({ script: pairScript, latencyMs: 10_000 }) } });
      await node.run(twoAgentCrew(), { input: 'x', runId: 'once-1' });
    }
    const manifests = layout.checkpoints('once-1');
    let reads = 0;
    const storage = new Proxy(disk, {
      get(target, prop, receiver) {
        if (prop === 'entries') return (range: KeyRange) => (range.gte === manifests.gte && range.lt === manifests.lt && reads++, target.entries(range));
        const value = Reflect.get(target, prop, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript, latencyMs: 10_000 }) }, crews: [twoAgentCrew()] });
    expect(node.get('once-1')?.status).toBe('running');
    expect(reads).toBe(1);
  });
});
