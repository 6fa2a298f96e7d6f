import { describe, expect, it } from 'vitest';
import { encodeEnvelope } from '../advanced.js';
import { createNode, crew, isTroupeError, memoryStorage, scriptedModel, type RunEvent } from '../index.js';
import { encode } from '../core/codec.js';
import { countingIds, manualClock } from '../core/clock.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';
import { runTroupe } from './helpers/cli.js';
import { createWsTransport } from '../transports/ws.js';

const setup = async (script = pairScript) => {
  const storage = memoryStorage();
  const node = await createNode({ storage, models: { scripted: scriptedModel({ script }) }, ids: countingIds() });
  return { storage, node, [Symbol.asyncDispose]: async () => { await node.close(); await storage.close(); } };
};

describe('node', () => {
  it('runs a two-agent crew to completion, passing the task along by envelopes', async () => {
    await using ctx = await setup();
    const events: RunEvent[] = [];
    ctx.node.subscribe((e) => events.push(e));
    const run = await ctx.node.run(twoAgentCrew(), { input: 'brief me', runId: 'r1' });
    const result = await run.result();
    expect(result).toEqual({ runId: 'r1', status: 'completed', output: 'final: a brief about actor and state', error: null });
    const messages = events.filter((e) => e.type === 'message').map((e) => e.type === 'message' && `${e.from}->${e.to}:${e.messageType}`);
    expect(messages).toEqual(['r1/crew->r1/researcher:task', 'r1/researcher->r1/crew:result', 'r1/crew->r1/writer:task', 'r1/writer->r1/crew:result']);
    const researcherStates = events.filter((e) => e.type === 'state' && e.actor === 'researcher').map((e) => e.type === 'state' && e.state);
    expect(researcherStates).toEqual(['idle', 'planning', 'acting', 'planning', 'acting', 'planning', 'done']);
    const [record] = await ctx.node.runs();
    expect(record).toMatchObject({ id: 'r1', status: 'completed', crew: 'pair', output: result.output });
  });

  it('answers ask() with the reply envelope and times out when nobody answers', async () => {
    await using ctx = await setup((request) => (request.messages[1]?.content === 'second task' ? 'two' : 'one'));
    const crewDef = twoAgentCrew();
    const run = await ctx.node.run(crewDef, { input: 'x', runId: 'r2' });
    // The researcher is busy with the crew's task; once done it accepts another task by ask.
    await new Promise<void>((resolve) => run.subscribe((e) => e.type === 'state' && e.actor === 'researcher' && e.state === 'done' && resolve()));
    const reply = await ctx.node.ask('r2/researcher', 'task', { content: 'second task' }, { timeoutMs: 5_000 });
    expect(reply).toMatchObject({ type: 'result', from: 'r2/researcher', payload: { output: 'two' } });
  });

  it('fails ask() with ASK_TIMEOUT when no reply comes in time', async () => {
    const clock = manualClock();
    await using storage = memoryStorage();
    // The model never answers within the test: the crew stays busy, nobody replies.
    await using node = await createNode({ storage, clock, models: { scripted: scriptedModel({ script: pairScript, latencyMs: 60_000 }) } });
    await node.run(twoAgentCrew(), { input: 'x', runId: 'r5' });
    const asked = node.ask('r5/writer', 'ping', {}, { timeoutMs: 1_000 });
    clock.advance(999);
    await Promise.resolve();
    clock.advance(1);
    await expect(asked).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'ASK_TIMEOUT') && /within 1000 ms/.test((e as Error).message));
  });

  it('rejects malformed envelopes with a clear error and keeps serving', async () => {
    await using ctx = await setup();
    const run = await ctx.node.run(twoAgentCrew(), { input: 'brief me', runId: 'r3' });
    const bad: Array<[unknown, RegExp]> = [
      [null, /invalid envelope: envelope/],
      [{ id: 'e', from: 'a', to: 'r3/researcher', type: 'task', payload: {}, seq: -1, ts: 0 }, /seq/],
      [{ id: 'e', from: 'bad address!', to: 'r3/researcher', type: 'task', payload: {}, seq: 0, ts: 0 }, /from/],
      [{ id: 'e', from: 'a', to: '../../etc', type: 'task', payload: {}, seq: 0, ts: 0 }, /to/],
      [{ id: 'e', from: 'a', to: 'r3/researcher', type: 'task', payload: {}, seq: 0, ts: 0, extra: 1 }, /unrecognized/i],
      [{ id: 'e', from: 'a', to: 'r3/researcher', type: '9bad', payload: {}, seq: 0, ts: 0 }, /type/],
    ];
    for (const [value, message] of bad) {
      await expect(ctx.node.deliver(value)).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'INVALID_ENVELOPE') && message.test((e as Error).message));
    }
    await expect(ctx.node.receive(new Uint8Array([0xc1, 0xff, 0x00]))).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'INVALID_ENVELOPE'));
    await expect(ctx.node.receive(encode({ hello: 'world' }))).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'INVALID_ENVELOPE'));
    const huge = encodeEnvelope({ id: 'e', from: 'a', to: 'r3/researcher', type: 'task', payload: 'x'.repeat(2 * 1024 * 1024), seq: 0, ts: 0 });
    await expect(ctx.node.receive(huge)).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'FRAME_TOO_LARGE'));
    await expect(ctx.node.deliver({ id: 'e', from: 'a', to: 'nope/agent', type: 'task', payload: { content: 'x' }, seq: 0, ts: 0 })).rejects.toSatisfy((e: unknown) =>
      isTroupeError(e, 'UNKNOWN_ACTOR'),
    );
    expect(ctx.node.status).toBe('running');
    expect((await run.result()).output).toBe('final: a brief about actor and state');
  });

  it('closes idempotently, refuses new work after close and keeps unfinished runs resumable', async () => {
    const storage = memoryStorage();
    const node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript, latencyMs: 50 }) } });
    const run = await node.run(twoAgentCrew(), { input: 'x', runId: 'r4' });
    await Promise.all([node.close(), node.close()]);
    expect(node.status).toBe('closed');
    expect(run.status).toBe('stopped');
    await expect(node.run(twoAgentCrew(), { input: 'x' })).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'NODE_CLOSED'));
    await using again = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript }) }, crews: [twoAgentCrew()] });
    expect((await again.get('r4')!.result()).output).toBe('final: a brief about actor and state');
  });

  it('refuses misuse with a TypeError that states the rule', async () => {
    await using ctx = await setup();
    await expect(createNode({} as never)).rejects.toThrow(TypeError);
    await expect(ctx.node.run(twoAgentCrew(), { input: 'x', runId: 'has space' })).rejects.toThrow(/run id "has space" must match/);
    await ctx.node.run(twoAgentCrew(), { input: 'x', runId: 'dup' });
    await expect(ctx.node.run(twoAgentCrew(), { input: 'x', runId: 'dup' })).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'RUN_ALREADY_ACTIVE'));
  });

  it('holds node ids to one rule wherever a node is named: the node, a placement, the transport and --peer', async () => {
    for (const bad of ['b.1', 'b:1', '', 'x'.repeat(65)]) {
      await expect(createNode({ storage: memoryStorage(), nodeId: bad })).rejects.toThrow(/must match/);
      expect(() => crew({ id: 'placed', agents: twoAgentCrew().agents, placement: { [twoAgentCrew().agents[1]!.id]: bad } })).toThrow(/must match/);
      await expect(createWsTransport({ nodeId: bad, storage: memoryStorage(), secret: 'x'.repeat(32), deliver: async () => {} })).rejects.toThrow(/must match/);
    }
    const peer = await runTroupe(['node', '--node-id', 'a', '--peer', 'b.1=ws://127.0.0.1:1', '--db', ':memory:']);
    expect(peer.code).toBe(2);
    expect(peer.stderr).toMatch(/--peer is <node-id>=ws:\/\/host:port, the node id matching/);
  });
});

describe('a run whose last checkpoint cannot be written', () => {
  it('settles as failed with STORAGE_FAILED instead of never settling', async () => {
    const { decode } = await import('../core/codec.js');
    const { memoryStorage: memory } = await import('../storage/memory.js');
    const inner = memory();
    // Refuses exactly the batch that records the run's end.
    const storage = Object.create(inner) as typeof inner;
    Object.defineProperty(storage, 'write', {
      value: (ops: readonly { type: string; key: string; value?: Uint8Array }[], options?: object) => {
        const ends = ops.some((op) => op.key.startsWith('jrnl:') && op.value && (decode(op.value, Infinity) as { kind?: string }).kind === 'run.completed');
        return ends ? Promise.reject(new Error('disk full')) : inner.write(ops as never, options);
      },
    });
    const { createNode: create, scriptedModel: scripted } = await import('../index.js');
    const { pairScript: script, twoAgentCrew: pair } = await import('./helpers/fixtures.js');
    await using node = await create({ storage, models: { scripted: scripted({ script }) } });
    const run = await node.run(pair(), { input: 'x', runId: 'lw' });
    const result = await run.settled();
    expect(result.status).toBe('failed');
    expect(result.error).toMatchObject({ code: 'STORAGE_FAILED' });
    expect(result.error?.message).toMatch(/disk full/);
  });
});
