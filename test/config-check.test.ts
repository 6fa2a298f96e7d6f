import { describe, expect, it } from 'vitest';
import { agent, createNode, crew, memoryStorage, scriptedModel, type Storage } from '../index.js';
import { manualClock } from '../core/clock.js';
import { createRunStore } from '../core/run-store.js';
import { createRouter, openAICompatible } from '../models/index.js';
import { failure } from './helpers/failure.js';

/** Every key in the storage, to show that a refused run wrote nothing. */
async function keys(storage: Storage): Promise<string[]> {
  const out: string[] = [];
  for await (const [key] of storage.entries({})) out.push(key);
  return out;
}

const member = (id: string, model: string) => agent({ id, role: id, instructions: id, model });

describe('model references are checked when a run starts', () => {
  it('fails node.run with CONFIG_INVALID naming every bad agent and reference, before anything is written', async () => {
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: { ok: ['fine'] } }) } });
    const before = await keys(storage);
    const team = crew({ id: 'team', agents: [member('planner', 'nope:gpt-4o'), member('ok', 'scripted'), member('writer', 'ghost')] });

    const error = await failure(node.run(team, { input: 'go', runId: 'cfg-1' }));
    expect(error.code).toBe('CONFIG_INVALID');
    expect(error.retryable).toBe(false);
    expect(error.message).toBe(
      'run "cfg-1" of crew "team" cannot start: agent "planner" model "nope:gpt-4o": no model provider "nope"; registered: scripted; ' +
        'agent "writer" model "ghost": no model provider "ghost"; registered: scripted',
    );
    expect(error.details.problems).toEqual([
      { agent: 'planner', model: 'nope:gpt-4o', problem: 'no model provider "nope"; registered: scripted' },
      { agent: 'writer', model: 'ghost', problem: 'no model provider "ghost"; registered: scripted' },
    ]);
    expect(await keys(storage)).toEqual(before);
    expect(node.get('cfg-1')).toBeUndefined();
  });

  it('asks providers about their models: a router route that does not exist, nested routes, deprecation targets', async () => {
    await using storage = memoryStorage();
    const scripted = scriptedModel({ script: {} });
    const openai = openAICompatible({ baseURL: 'http://127.0.0.1:9/v1' }); // never called
    const inner = createRouter({ id: 'inner', providers: { scripted }, routes: { drafts: ['scripted:a'] } });
    const router = createRouter({
      providers: { scripted, inner, openai },
      routes: { writer: ['scripted:old', 'inner:drafts'], editor: { plan: ['inner:reviews'], recover: ['openai'] } },
      // Not due for decades, and still checked: a long run reaches it.
      deprecations: { 'scripted:old': { replacedBy: 'inner:gone', after: '2100-01-01T00:00:00Z' } },
    });
    await using node = await createNode({ storage, models: { scripted, openai, router } });
    const before = await keys(storage);
    const team = crew({ id: 'routed', agents: [member('writer', 'router:writer'), member('editor', 'router:editor'), member('critic', 'router:critic'), member('solo', 'openai:')] });

    const error = await failure(node.run(team, { input: 'go', runId: 'cfg-2' }));
    expect(error.code).toBe('CONFIG_INVALID');
    expect(error.details.problems).toEqual([
      { agent: 'writer', model: 'router:writer', problem: 'router "router" route "writer": candidate 1 "inner:gone" (replacing "scripted:old"): router "inner" has no route "gone"; routes: drafts' },
      {
        agent: 'editor',
        model: 'router:editor',
        problem:
          'router "router" route "editor": candidate 1 "inner:reviews": router "inner" has no route "reviews"; routes: drafts; ' +
          'recover candidate 1 "openai": provider "openai" has no defaultModel, so "openai" alone names no model; write "openai:<model>" or pass defaultModel',
      },
      { agent: 'critic', model: 'router:critic', problem: 'router "router" has no route "critic"; routes: writer, editor' },
      { agent: 'solo', model: 'openai:', problem: 'provider "openai" needs a model name after the colon' },
    ]);
    expect(error.message).toMatch(/^run "cfg-2" of crew "routed" cannot start: agent "writer" model "router:writer": router "router" route "writer"/);
    expect(await keys(storage)).toEqual(before);
  });

  it('refuses node.resume and node.fork on a node that cannot serve the models, writing nothing', async () => {
    const clock = manualClock(0);
    await using storage = memoryStorage();
    const team = crew({ id: 'slow', agents: [member('thinker', 'scripted')] });
    // The model takes a minute of clock time, so the run is mid-step when the node closes.
    const first = await createNode({ storage, clock, models: { scripted: scriptedModel({ script: { thinker: ['done'] }, latencyMs: 60_000, clock }) } });
    await first.run(team, { input: 'go', runId: 'cfg-3' });
    await expect.poll(async () => (await createRunStore(storage).latestCheckpoint('cfg-3'))?.seq).toBeGreaterThan(0);
    await first.close();

    await using second = await createNode({ storage, clock, models: { other: scriptedModel({ script: {} }) }, resume: false });
    const before = await keys(storage);
    const resumed = await failure(second.resume('cfg-3', team));
    expect(resumed.code).toBe('CONFIG_INVALID');
    expect(resumed.message).toBe('run "cfg-3" of crew "slow" cannot start: agent "thinker" model "scripted": no model provider "scripted"; registered: other');
    const forked = await failure(second.fork('cfg-3', { at: 1, runId: 'cfg-3-fork', definition: team }));
    expect(forked.code).toBe('CONFIG_INVALID');
    expect(forked.message).toMatch(/^run "cfg-3-fork" of crew "slow" cannot start: agent "thinker" model "scripted"/);
    expect(await keys(storage)).toEqual(before);
    expect((await createRunStore(storage).getRun('cfg-3'))?.resumes).toBe(0);
  });
});
