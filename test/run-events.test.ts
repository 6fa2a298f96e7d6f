import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, memoryStorage, scriptedModel, tool, TroupeError, type RunEvent } from '../index.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';

describe('run.events()', () => {
  it('yields the run from its start, each journaled fact once, even when iteration begins after the run finished', async () => {
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript }) } });
    const seen: RunEvent[] = [];
    node.subscribe((e) => seen.push(e));
    const run = await node.run(twoAgentCrew(), { input: 'brief me', runId: 'e1' });
    await run.result();
    const late: RunEvent[] = [];
    for await (const event of run.events()) late.push(event);
    expect(late[0]).toMatchObject({ type: 'run.started', runId: 'e1', crew: 'pair', journalSeq: 1 });
    expect(late.at(-1)).toMatchObject({ type: 'run.completed', output: 'final: a brief about actor and state' });
    // Every journaled live event appears once, in journal order, with the same content.
    const journaled = (events: RunEvent[]) => events.filter((e) => e.journalSeq !== undefined).map(({ journalSeq, ...e }) => ({ journalSeq, ...e, ...('ms' in e ? { ms: 0 } : {}) }));
    expect(journaled(late)).toEqual(journaled(seen).filter((e) => e.type !== 'model.call' || !e.replayed));
    const seqs = late.map((e) => e.journalSeq!);
    expect(seqs).toEqual([...new Set(seqs)].sort((a, b) => a - b));
  });

  it('joins the journal with live events without doubles while the run is going', async () => {
    await using storage = memoryStorage();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const wait = tool({ name: 'wait', description: 'Waits.', input: z.object({}), effect: 'read', run: () => gate.then(() => 'ok') });
    const script = { a: [{ toolCalls: [{ name: 'wait', args: {} }] }, 'done'] };
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script }) } });
    const started = new Promise<void>((resolve) => node.subscribe((e) => e.type === 'state' && e.actor === 'a' && e.state === 'acting' && resolve()));
    const run = await node.run(crew({ id: 'w', agents: [agent({ id: 'a', role: 'a', instructions: 'a', model: 'scripted', tools: [wait] })] }), { input: 'go', runId: 'e2' });
    await started;
    const events: RunEvent[] = [];
    const reading = (async () => {
      for await (const e of run.events()) events.push(e);
    })();
    release();
    await run.result();
    await reading;
    const types = events.map((e) => (e.type === 'state' ? `${e.actor}:${e.state}` : e.type));
    expect(types[0]).toBe('run.started');
    expect(types).toContain('a:acting');
    expect(types.filter((t) => t === 'tool.call')).toHaveLength(1);
    expect(types.filter((t) => t === 'run.completed')).toHaveLength(1);
    const seqs = events.filter((e) => e.journalSeq !== undefined).map((e) => e.journalSeq!);
    expect(seqs).toEqual([...new Set(seqs)].sort((a, b) => a - b));
  });

  it("with from: 'now' yields only what happens after the call", async () => {
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript }) } });
    const run = await node.run(twoAgentCrew(), { input: 'brief me', runId: 'e3' });
    await run.result();
    const events: RunEvent[] = [];
    for await (const e of run.events({ from: 'now' })) events.push(e);
    expect(events).toEqual([]);
    // A finished run resumed by id replays its journal too.
    const again = await node.resume('e3');
    const replayed: string[] = [];
    for await (const e of again.events()) replayed.push(e.type);
    expect(replayed[0]).toBe('run.started');
    expect(replayed.at(-1)).toBe('run.completed');
  });
});

describe('deciding one approval twice at once', () => {
  it('the loser is told APPROVAL_DECIDED, not APPROVAL_NOT_FOUND', async () => {
    await using storage = memoryStorage();
    const pay = tool({ name: 'pay', description: 'Pays.', input: z.object({}), effect: 'irreversible', scopes: ['money'], run: () => 'paid' });
    const script = { a: [{ toolCalls: [{ name: 'pay', args: {} }] }, 'done'] };
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script }) } });
    const asked = new Promise<string>((resolve) => node.subscribe((e) => e.type === 'approval.requested' && resolve(e.approvalId)));
    const def = crew({ id: 'ap', agents: [agent({ id: 'a', role: 'a', instructions: 'a', model: 'scripted', tools: [pay], policy: { ask: ['money'] } })] });
    const run = await node.run(def, { input: 'go', runId: 'ap1' });
    const id = await asked;
    const outcomes = await Promise.allSettled([node.approve(id), node.approve(id)]);
    expect(outcomes[0]!.status).toBe('fulfilled');
    expect(outcomes[1]!.status).toBe('rejected');
    const loser = (outcomes[1] as PromiseRejectedResult).reason as TroupeError;
    expect(loser.code).toBe('APPROVAL_DECIDED');
    expect(loser.message).toBe(`approval ${id} was already approved`);
    expect((await run.result()).output).toBe('done');
  });
});
