import { describe, expect, it, vi } from 'vitest';
import { createNode, manualClock, memoryStorage, scriptedModel, type ModelRequest } from '../index.js';
import { pairScript, placedCrew } from './helpers/fixtures.js';
import { memoryNetwork } from './helpers/memory-network.js';


describe('actors placed on other nodes', () => {
  it('runs a crew whose writer lives on another node, with the same output as on one node', async () => {
    const net = memoryNetwork();
    await using sa = memoryStorage();
    await using sb = memoryStorage();
    await using b = await createNode({ nodeId: 'b', storage: sb, transport: net.transport, crews: [placedCrew()], models: { scripted: scriptedModel({ script: pairScript }) } });
    await using a = await createNode({ nodeId: 'a', storage: sa, transport: net.transport, crews: [placedCrew()], models: { scripted: scriptedModel({ script: pairScript }) } });
    const partDone = new Promise<void>((resolve) => b.subscribe((e) => e.type === 'run.completed' && e.runId === 'd1' && resolve()));
    const run = await a.run(placedCrew(), { input: 'brief me', runId: 'd1' });
    expect((await run.result()).output).toBe('final: a brief about actor and state');
    // The origin tells the part the run ended; the part finishes too.
    await partDone;
    // The network records a delivery once `deliver` resolved, which may be after the part's end event.
    await vi.waitFor(() => expect(net.delivered.map((d) => `${d.from}>${d.to}:${d.type}`)).toEqual(['a>b:troupe.spawn', 'a>b:task', 'b>a:result', 'a>b:troupe.end']));
    // Each node persisted the actors it hosts.
    expect((await b.runs())[0]).toMatchObject({ id: 'd1', status: 'completed', part: { origin: 'a', actors: ['writer'] } });
    expect((await a.runs())[0]).toMatchObject({ id: 'd1', status: 'completed' });
  });

  it('completes when the remote node is down for a while and resumes its actors from disk', async () => {
    const net = memoryNetwork();
    await using sa = memoryStorage();
    await using sb = memoryStorage();
    const slowWriter = { scripted: scriptedModel({ script: pairScript, latencyMs: 600_000 }) };
    const b1 = await createNode({ nodeId: 'b', storage: sb, transport: net.transport, crews: [placedCrew()], models: slowWriter });
    await using a = await createNode({ nodeId: 'a', storage: sa, transport: net.transport, crews: [placedCrew()], models: { scripted: scriptedModel({ script: pairScript }) } });
    const run = await a.run(placedCrew(), { input: 'brief me', runId: 'd2' });
    // The writer on b has its task and is planning when b goes down.
    await new Promise<void>((resolve) => b1.subscribe((e) => e.type === 'state' && e.actor === 'writer' && e.state === 'planning' && resolve()));
    await b1.close();
    await using b2 = await createNode({ nodeId: 'b', storage: sb, transport: net.transport, crews: [placedCrew()], models: { scripted: scriptedModel({ script: pairScript }) } });
    const part = b2.get('d2')!;
    expect((await run.result()).output).toBe('final: a brief about actor and state');
    await part.settled();
    expect((await b2.runs())[0]).toMatchObject({ id: 'd2', status: 'completed', resumes: 1 });
  });

  it('holds mail that reaches a restarted node before it resumed the run, instead of refusing it', async () => {
    const net = memoryNetwork();
    await using sa = memoryStorage();
    await using sb = memoryStorage();
    // The researcher on a answers only when the test moves this clock: b goes down in between.
    const gate = manualClock(0);
    const b1 = await createNode({ nodeId: 'b', storage: sb, transport: net.transport, crews: [placedCrew()], models: { scripted: scriptedModel({ script: pairScript }) } });
    await using a = await createNode({ nodeId: 'a', storage: sa, transport: net.transport, crews: [placedCrew()], models: { scripted: scriptedModel({ script: pairScript, latencyMs: 1, clock: gate }) } });
    const spawned = new Promise<void>((resolve) => b1.subscribe((e) => e.type === 'run.started' && e.runId === 'd5' && resolve()));
    const run = await a.run(placedCrew(), { input: 'brief me', runId: 'd5' });
    await spawned;
    await b1.close();
    // The researcher's three turns; its task for the writer then waits for b in the network.
    let answered = 0;
    const taskSent = new Promise<void>((resolve) => a.subscribe((e) => e.type === 'state' && e.actor === 'researcher' && e.state === 'done' && resolve()));
    while (answered < 3) {
      if (gate.pending === 0) {
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      gate.advance(1);
      answered++;
    }
    await taskSent;
    // b comes back: the network hands it the task as soon as it connects, before its runs are resumed.
    await using b2 = await createNode({ nodeId: 'b', storage: sb, transport: net.transport, crews: [placedCrew()], models: { scripted: scriptedModel({ script: pairScript }) } });
    expect((await run.result()).output).toBe('final: a brief about actor and state');
    await vi.waitFor(() => expect(net.delivered.filter((d) => d.to === 'b' && d.type === 'task')).toHaveLength(1));
    await b2.get('d5')!.settled();
  });

  it('answers ask() across nodes', async () => {
    const net = memoryNetwork();
    await using sa = memoryStorage();
    await using sb = memoryStorage();
    const script = (req: ModelRequest) => (req.messages[1]?.content === 'second task' ? 'remote answer' : 'x');
    await using b = await createNode({ nodeId: 'b', storage: sb, transport: net.transport, crews: [placedCrew()], models: { scripted: scriptedModel({ script }) } });
    await using a = await createNode({ nodeId: 'a', storage: sa, transport: net.transport, crews: [placedCrew()], models: { scripted: scriptedModel({ script: { researcher: ['r'], writer: [] } as never, latencyMs: 600_000 }) } });
    await a.run(placedCrew(), { input: 'x', runId: 'd3' });
    await new Promise<void>((resolve) => b.subscribe((e) => e.type === 'run.started' && resolve()));
    const reply = await a.ask('d3/writer', 'task', { content: 'second task' }, { timeoutMs: 5_000 });
    expect(reply).toMatchObject({ type: 'result', from: 'd3/writer', payload: { output: 'remote answer' } });
  });
});
