import { describe, expect, it } from 'vitest';
import { createNode, memoryStorage, scriptedModel, type ModelProvider } from '../index.js';
import { createRunStore, keys, put } from '../core/run-store.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';

function counting(provider: ModelProvider) {
  const calls: string[] = [];
  return { calls, wrapped: { id: provider.id, generate: (req, ctx) => (calls.push(`${req.agent}#${req.step}`), provider.generate(req, ctx)) } as ModelProvider };
}

describe('history and fork', () => {
  it('lists checkpoints with every actor state and forks a new run that replays, not redoes, the work before the fork point', async () => {
    await using storage = memoryStorage();
    const original = counting(scriptedModel({ script: pairScript }));
    await using node = await createNode({ storage, models: { scripted: original.wrapped } });
    const result = await (await node.run(twoAgentCrew(), { input: 'brief me', runId: 'orig' })).result();
    expect(original.calls).toHaveLength(4);

    const history = await node.history('orig');
    expect(history.map((h) => h.seq)).toEqual(history.map((_, i) => i + 1));
    expect(history[0]!.states).toMatchObject({ crew: 'running.active', writer: 'idle' });
    expect(history.some((h) => h.states.researcher === 'planning')).toBe(true);
    expect(history.at(-1)!.states).toMatchObject({ crew: 'done' });
    // Fork at the researcher's last tool step: its first two model calls are behind it.
    const at = [...history].reverse().find((h) => h.states.researcher === 'acting')!;
    expect(at).toBeDefined();

    const forked = counting(scriptedModel({ script: pairScript }));
    await using forkNode = await createNode({ storage, models: { scripted: forked.wrapped } });
    const fork = await forkNode.fork('orig', { at: at.seq, runId: 'fork-1', definition: twoAgentCrew() });
    expect((await fork.result()).output).toBe(result.output);
    expect(forked.calls).toEqual(['researcher#3', 'writer#1']);

    const store = createRunStore(storage);
    expect(await store.requireRun('fork-1')).toMatchObject({ status: 'completed', forkedFrom: { runId: 'orig', checkpoint: at.seq } });
    expect((await store.requireRun('orig')).checkpoint).toBe(history.length);
    const forkJournal = await store.journal('fork-1');
    expect(forkJournal.filter((e) => e.kind === 'model.call')).toHaveLength(4);
    await expect(forkNode.fork('orig', { at: 999 })).rejects.toThrow(/has no checkpoint 999/);
  });
});

describe('versioned snapshots', () => {
  async function stoppedRun() {
    const storage = memoryStorage();
    const node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript, latencyMs: 60_000 }) } });
    await node.run(twoAgentCrew(), { input: 'x', runId: 'v' });
    await node.close();
    return storage;
  }

  it('upgrades an old snapshot through registered migrations and continues the run', async () => {
    await using storage = await stoppedRun();
    const seen: string[] = [];
    const v3 = {
      ...twoAgentCrew(),
      version: '3',
      migrations: [
        { from: '1', to: '2', migrate: (s: unknown) => (seen.push('1→2'), s) },
        { from: '2', to: '3', migrate: (s: unknown) => (seen.push('2→3'), s) },
      ],
    };
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript }) }, crews: [v3] });
    expect((await node.get('v')!.result()).output).toBe('final: a brief about actor and state');
    expect(seen).toEqual(['1→2', '2→3']);
    const history = await node.history('v');
    expect(history[0]!.version).toBe('1');
    expect(history.at(-1)!.version).toBe('3');
  });

  it('refuses a snapshot no migration reaches, or from a newer schema, and leaves it untouched', async () => {
    await using storage = await stoppedRun();
    const store = createRunStore(storage);
    const before = await store.latestCheckpoint('v');
    await using node = await createNode({ storage, resume: false, models: {} });
    await expect(node.resume('v', { ...twoAgentCrew(), version: '2' })).rejects.toThrow(/no migration leads from version "1"/);
    await storage.write([put(keys.checkpoint('v', before!.seq + 1), { ...before!, seq: before!.seq + 1, schemaVersion: 99 })]);
    await expect(node.resume('v', twoAgentCrew())).rejects.toThrow(/written by a newer Troupe/);
    expect((await store.checkpoint('v', before!.seq))).toEqual(before);
    expect((await store.requireRun('v')).status).toBe('running');
  });
});
