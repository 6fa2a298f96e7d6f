import { describe, expect, it } from 'vitest';
import { isTroupeError, TroupeError } from '../core/errors.js';
import { createNode } from '../core/node.js';
import { prefixRange, type Storage } from '../core/storage.js';
import { levelStorage } from '../storage/level.js';
import { memoryStorage } from '../storage/memory.js';
import { recorder, testEnvelope } from '../testing/transport-conformance.js';
import { createWsTransport, wsTransport, type WsTransportOptions } from '../transports/ws.js';
import { scriptedModel } from '../models/scripted.js';
import { pairScript, placedCrew } from './helpers/fixtures.js';
import { runTroupe } from './helpers/cli.js';
import { tempDir } from './helpers/temp.js';

const SECRET = 'outbox-bound-secret-0123456789';

async function count(storage: Storage, prefix: string): Promise<number> {
  let n = 0;
  for await (const _ of storage.entries(prefixRange(prefix))) n++;
  return n;
}

/** A port that was just listened on and is free again: the peer is down. */
async function downPeer() {
  const probe = await createWsTransport({ nodeId: 'b', storage: memoryStorage(), secret: SECRET, deliver: async () => {}, listen: { host: '127.0.0.1', port: 0 } });
  const { port, url } = probe.address!;
  await probe.close();
  return { port, url };
}

const isFull = (e: unknown) => isTroupeError(e, 'OUTBOX_FULL') && e.retryable === true;

describe('the outbox for a peer that is down is bounded', () => {
  it('fails sends beyond the bound with OUTBOX_FULL, through node.tell too, and delivers what it kept once when the peer is back', async () => {
    await using dir = await tempDir();
    await using storage = await levelStorage({ path: dir.path });
    const peer = await downPeer();
    const factory = wsTransport({ secret: SECRET, peers: { b: peer.url }, maxOutboxEntries: 50, reconnectMinMs: 10, reconnectMaxMs: 50 });
    await using node = await createNode({ nodeId: 'a', storage, transport: factory });
    const a = await factory.created;
    for (let i = 1; i <= 50; i++) await a.send('b', testEnvelope(i));
    await expect(a.send('b', testEnvelope(51))).rejects.toSatisfy(isFull);
    await expect(node.tell('x1/_part.b', 'note', { i: 52 })).rejects.toSatisfy(isFull);
    expect(await count(storage, 'outbox:b:')).toBe(50);

    const at = recorder();
    await using b = await createWsTransport({ nodeId: 'b', storage: memoryStorage(), secret: SECRET, deliver: at.deliver, listen: { host: '127.0.0.1', port: peer.port } });
    await a.flushed('b');
    expect(at.received.map((r) => r.envelope.id)).toEqual(Array.from({ length: 50 }, (_, i) => `env_${i + 1}`));
    await a.send('b', testEnvelope(53)); // room again
    await a.flushed('b');
    expect(at.received.map((r) => r.envelope.id).at(-1)).toBe('env_53');
    expect(b.stats().duplicates).toBe(0);
  });

  it('bounds bytes as well as entries', async () => {
    const peer = await downPeer();
    await using a = await createWsTransport({ nodeId: 'a', storage: memoryStorage(), secret: SECRET, deliver: async () => {}, peers: { b: peer.url }, maxPayload: 4096, maxOutboxBytes: 8192 });
    const big = (i: number) => testEnvelope(i, { payload: 'x'.repeat(1000) });
    let sent = 0;
    for (;;) {
      try {
        await a.send('b', big(sent + 1));
        sent++;
      } catch (error) {
        expect(error).toSatisfy(isFull);
        break;
      }
    }
    expect(sent).toBeGreaterThan(4);
    expect(sent).toBeLessThanOrEqual(8);
    expect(a.peers()[0]!.unacked).toBe(sent);
  });

  it('makes sends wait for room when configured to, in order, and fails them once the wait is over', async () => {
    const peer = await downPeer();
    const options: Partial<WsTransportOptions> = { peers: { b: peer.url }, maxOutboxEntries: 5, reconnectMinMs: 10, reconnectMaxMs: 50 };
    await using a = await createWsTransport({ nodeId: 'a', storage: memoryStorage(), secret: SECRET, deliver: async () => {}, ...options, outboxWaitMs: 60_000 });
    for (let i = 1; i <= 5; i++) await a.send('b', testEnvelope(i));
    const waiting = [6, 7].map((i) => a.send('b', testEnvelope(i)));
    let settled = false;
    void Promise.all(waiting).then(() => (settled = true));
    await using impatient = await createWsTransport({ nodeId: 'a2', storage: memoryStorage(), secret: SECRET, deliver: async () => {}, ...options, outboxWaitMs: 30 });
    for (let i = 1; i <= 5; i++) await impatient.send('b', testEnvelope(i));
    await expect(impatient.send('b', testEnvelope(6))).rejects.toSatisfy(isFull);
    expect(settled).toBe(false);

    const at = recorder();
    await using b = await createWsTransport({ nodeId: 'b', storage: memoryStorage(), secret: SECRET, deliver: at.deliver, listen: { host: '127.0.0.1', port: peer.port } });
    await Promise.all(waiting);
    await a.flushed('b');
    expect(at.received.filter((r) => r.from === 'a').map((r) => r.envelope.id)).toEqual(Array.from({ length: 7 }, (_, i) => `env_${i + 1}`));
    expect(b.stats().duplicates).toBe(0);
  });
});

describe('a run whose peer is down', () => {
  it('keeps its mail, in order, while the outbox is full, and completes once the peer is back', async () => {
    await using dirA = await tempDir();
    await using storeA = await levelStorage({ path: dirA.path });
    const peer = await downPeer();
    const models = () => ({ scripted: scriptedModel({ script: pairScript }) });
    // Room for one envelope: the spawn gets in, the writer's task finds the outbox full.
    const atA = wsTransport({ secret: SECRET, peers: { b: peer.url }, maxOutboxEntries: 1, reconnectMinMs: 10, reconnectMaxMs: 50 });
    await using a = await createNode({ nodeId: 'a', storage: storeA, transport: atA, crews: [placedCrew()], models: models() });
    const run = await a.run(placedCrew(), { input: 'brief me', runId: 'w1' });
    // The writer's task has left the run: with the spawn still unacknowledged, it finds no room.
    await new Promise<void>((resolve) => run.subscribe((e) => e.type === 'message' && e.messageType === 'task' && e.to.endsWith('writer') && resolve()));
    expect((await atA.created).peers()[0]).toMatchObject({ nodeId: 'b', unacked: 1 });
    await using dirB = await tempDir();
    await using storeB = await levelStorage({ path: dirB.path });
    await using b = await createNode({ nodeId: 'b', storage: storeB, transport: wsTransport({ secret: SECRET, listen: { host: '127.0.0.1', port: peer.port } }), crews: [placedCrew()], models: models() });
    expect((await run.result()).output).toBe('final: a brief about actor and state');
    const journal: string[] = [];
    for await (const event of run.events()) if (event.type === 'message' && (event as { deadLetter?: boolean }).deadLetter) journal.push(JSON.stringify(event));
    expect(journal).toEqual([]);
    expect(b.status).toBe('running');
  });
});

describe('a run whose peer is down, closed while its mail waits', () => {
  it('closes without waiting for the outbox, and delivers the waiting mail after a restart', async () => {
    await using dirA = await tempDir();
    const peer = await downPeer();
    const models = () => ({ scripted: scriptedModel({ script: pairScript }) });
    const transport = () => wsTransport({ secret: SECRET, peers: { b: peer.url }, maxOutboxEntries: 1, reconnectMinMs: 10, reconnectMaxMs: 50 });
    {
      await using storeA = await levelStorage({ path: dirA.path });
      const a = await createNode({ nodeId: 'a', storage: storeA, transport: transport(), crews: [placedCrew()], models: models() });
      const run = await a.run(placedCrew(), { input: 'brief me', runId: 'w2' });
      await new Promise<void>((resolve) => run.subscribe((e) => e.type === 'message' && e.messageType === 'task' && e.to.endsWith('writer') && resolve()));
      await a.close();
    }
    await using dirB = await tempDir();
    await using storeB = await levelStorage({ path: dirB.path });
    await using b = await createNode({ nodeId: 'b', storage: storeB, transport: wsTransport({ secret: SECRET, listen: { host: '127.0.0.1', port: peer.port } }), crews: [placedCrew()], models: models() });
    await using storeA = await levelStorage({ path: dirA.path });
    await using a = await createNode({ nodeId: 'a', storage: storeA, transport: transport(), crews: [placedCrew()], models: models() });
    expect((await a.get('w2')!.result()).output).toBe('final: a brief about actor and state');
    expect(b.status).toBe('running');
  });
});

describe('the outbox bound on the command line', () => {
  it('refuses an --outbox-max that is not a positive whole number', async () => {
    await using db = await tempDir();
    const bad = await runTroupe(['node', '--listen', '127.0.0.1:0', '--db', db.path, '--outbox-max', '0'], { TROUPE_SECRET: SECRET });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--outbox-max is a whole number of at least 1/);
  });
});

describe('dead letters', () => {
  it('keeps the most recent ones in a bounded ring', async () => {
    await using dir = await tempDir();
    await using storage = await levelStorage({ path: dir.path });
    const refuse = recorder();
    refuse.intercept = (envelope) => {
      throw new TroupeError('ENVELOPE_REFUSED', `no ${envelope.id}`);
    };
    await using b = await createWsTransport({ nodeId: 'b', storage, secret: SECRET, deliver: refuse.deliver, listen: { host: '127.0.0.1', port: 0 }, maxDeadLetters: 3 });
    await using a = await createWsTransport({ nodeId: 'a', storage: memoryStorage(), secret: SECRET, deliver: async () => {}, peers: { b: b.address!.url } });
    for (let i = 1; i <= 10; i++) await a.send('b', testEnvelope(i));
    await a.flushed('b');
    expect(a.stats().refusedByPeer).toBe(10);
    expect((await b.deadLetters()).map((d) => d.id).sort()).toEqual(['env_10', 'env_8', 'env_9']);
    expect(await count(storage, 'deadletter:')).toBe(4); // three slots and the counter
  });
});
