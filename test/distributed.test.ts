import { describe, expect, it } from 'vitest';
import { createNode, memoryStorage, scriptedModel, type ModelRequest } from '../index.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';
import { memoryNetwork } from './helpers/memory-network.js';

const placed = () => twoAgentCrew({ crew: { placement: { writer: 'b' } } });

describe('actors placed on other nodes', () => {
  it('runs a crew whose writer lives on another node, with the same output as on one node', async () => {
    const net = memoryNetwork();
    await using sa = memoryStorage();
    await using sb = memoryStorage();
    await using b = await createNode({ nodeId: 'b', storage: sb, transport: net.transport, crews: [placed()], models: { scripted: scriptedModel({ script: pairScript }) } });
    await using a = await createNode({ nodeId: 'a', storage: sa, transport: net.transport, crews: [placed()], models: { scripted: scriptedModel({ script: pairScript }) } });
    const partDone = new Promise<void>((resolve) => b.subscribe((e) => e.type === 'run.completed' && e.runId === 'd1' && resolve()));
    const run = await a.run(placed(), { input: 'brief me', runId: 'd1' });
    expect((await run.result()).output).toBe('final: a brief about actor and state');
    // The origin tells the part the run ended; the part finishes too.
    await partDone;
    expect(net.delivered.map((d) => `${d.from}>${d.to}:${d.type}`)).toEqual(['a>b:troupe.spawn', 'a>b:task', 'b>a:result', 'a>b:troupe.end']);
    // Each node persisted the actors it hosts.
    expect((await b.runs())[0]).toMatchObject({ id: 'd1', status: 'completed', part: { origin: 'a', actors: ['writer'] } });
    expect((await a.runs())[0]).toMatchObject({ id: 'd1', status: 'completed' });
  });

  it('completes when the remote node is down for a while and resumes its actors from disk', async () => {
    const net = memoryNetwork();
    await using sa = memoryStorage();
    await using sb = memoryStorage();
    const slowWriter = { scripted: scriptedModel({ script: pairScript, latencyMs: 600_000 }) };
    const b1 = await createNode({ nodeId: 'b', storage: sb, transport: net.transport, crews: [placed()], models: slowWriter });
    await using a = await createNode({ nodeId: 'a', storage: sa, transport: net.transport, crews: [placed()], models: { scripted: scriptedModel({ script: pairScript }) } });
    const run = await a.run(placed(), { input: 'brief me', runId: 'd2' });
    // The writer on b has its task and is planning when b goes down.
    await new Promise<void>((resolve) => b1.subscribe((e) => e.type === 'state' && e.actor === 'writer' && e.state === 'planning' && resolve()));
    await b1.close();
    await using b2 = await createNode({ nodeId: 'b', storage: sb, transport: net.transport, crews: [placed()], models: { scripted: scriptedModel({ script: pairScript }) } });
    const part = b2.get('d2')!;
    expect((await run.result()).output).toBe('final: a brief about actor and state');
    await part.settled();
    expect((await b2.runs())[0]).toMatchObject({ id: 'd2', status: 'completed', resumes: 1 });
  });

  it('answers ask() across nodes', async () => {
    const net = memoryNetwork();
    await using sa = memoryStorage();
    await using sb = memoryStorage();
    const script = (req: ModelRequest) => (req.messages[1]?.content === 'second task' ? 'remote answer' : 'x');
    await using b = await createNode({ nodeId: 'b', storage: sb, transport: net.transport, crews: [placed()], models: { scripted: scriptedModel({ script }) } });
    await using a = await createNode({ nodeId: 'a', storage: sa, transport: net.transport, crews: [placed()], models: { scripted: scriptedModel({ script: { researcher: ['r'], writer: [] } as never, latencyMs: 600_000 }) } });
    await a.run(placed(), { input: 'x', runId: 'd3' });
    await new Promise<void>((resolve) => b.subscribe((e) => e.type === 'run.started' && resolve()));
    const reply = await a.ask('d3/writer', 'task', { content: 'second task' }, { timeoutMs: 5_000 });
    expect(reply).toMatchObject({ type: 'result', from: 'd3/writer', payload: { output: 'remote answer' } });
  });
});
