import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { decode } from '../core/codec.js';
import { ErrorCode, isTroupeError, TroupeError } from '../core/errors.js';
import { prefixRange, type Storage } from '../core/storage.js';
import { levelStorage } from '../storage/level.js';
import { memoryStorage } from '../storage/memory.js';
import { clientHandshake, createHandshakeVerifier, encodeBatch, encodeFrame, HEADERS, PROTOCOL, secretKey } from '../transports/index.js';
import { encodeEnvelope } from '../core/envelope.js';
import { createWsTransport, MERGE_MAX_ENVELOPES, wsTransport, type WsTransport, type WsTransportOptions } from '../transports/ws.js';
import { createNode } from '../core/node.js';
import { scriptedModel } from '../models/scripted.js';
import { pairScript, placedCrew } from './helpers/fixtures.js';
import { watchLines } from './helpers/lines.js';
import { sealedClient, type SealedClient } from './helpers/sealed-client.js';
import { tempDir } from './helpers/temp.js';
import { recorder, testEnvelope, transportConformance, type Recorder } from '../testing/transport-conformance.js';

const SECRET = 'transport-test-secret-0123456789';
const KEY = secretKey(SECRET);
const FIXTURE = fileURLToPath(new URL('./fixtures/ws-peer.ts', import.meta.url));

type Extra = Partial<Omit<WsTransportOptions, 'nodeId' | 'storage' | 'deliver'>>;

function ws(nodeId: string, storage: Storage, deliver: Recorder | WsTransportOptions['deliver'], extra: Extra = {}): Promise<WsTransport> {
  return createWsTransport({
    nodeId,
    storage,
    secret: SECRET,
    deliver: typeof deliver === 'function' ? deliver : deliver.deliver,
    reconnectMinMs: 10,
    reconnectMaxMs: 200,
    ...extra,
  });
}

const listen = { host: '127.0.0.1', port: 0 } as const;

async function keys(storage: Storage, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const [key] of storage.entries(prefixRange(prefix))) out.push(key);
  return out;
}

/** Resolves with the status code of an upgrade request with `headers` (101 means accepted). */
function upgrade(port: number, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port,
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': randomBytes(16).toString('base64'), ...headers },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode ?? 0);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

const signed = (from: string, to: string, now = Date.now()) => ({ ...clientHandshake(KEY, from, to, now), 'sec-websocket-protocol': PROTOCOL });

/** An authenticated WebSocket client speaking sealed hand-built frames (for hostile peers holding the secret). */
const rawClient = (port: number, from: string, to: string): Promise<SealedClient> => sealedClient(`ws://127.0.0.1:${port}`, KEY, from, to);

/** A raw TCP socket that completed an authenticated WebSocket upgrade. */
async function rawSocket(port: number, from: string, to: string): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const key = randomBytes(16).toString('base64');
  const lines = [
    'GET / HTTP/1.1',
    `Host: 127.0.0.1:${port}`,
    'Connection: Upgrade',
    'Upgrade: websocket',
    'Sec-WebSocket-Version: 13',
    `Sec-WebSocket-Key: ${key}`,
    `Sec-WebSocket-Protocol: ${PROTOCOL}`,
    ...Object.entries(clientHandshake(KEY, from, to, Date.now())).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  let head = '';
  while (!head.includes('\r\n\r\n')) head += ((await once(socket, 'data')) as [Buffer])[0].toString('latin1');
  expect(head).toMatch(/^HTTP\/1.1 101/);
  expect(head).toContain(createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64'));
  return socket;
}

/** A masked client frame. */
function frame(opcode: number, fin: boolean, payload: Uint8Array): Buffer {
  const mask = randomBytes(4);
  const len = payload.byteLength;
  const header = len < 126 ? Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | len]) : Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | 126, len >> 8, len & 0xff]);
  const body = Buffer.from(payload).map((byte, i) => byte ^ mask[i % 4]!);
  return Buffer.concat([header, mask, body]);
}

/** Reads the close code the server sends on a raw socket (undefined if it just hung up). */
async function closeCode(socket: Socket): Promise<number | undefined> {
  let data = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => (data = Buffer.concat([data, chunk])));
  await once(socket, 'close');
  for (let i = 0; i + 3 < data.length; ) {
    const opcode = data[i]! & 0x0f;
    const len = data[i + 1]! & 0x7f;
    if (opcode === 0x8) return data.readUInt16BE(i + 2);
    i += 2 + len;
  }
  return undefined;
}

transportConformance('WebSocket (both nodes dial, LevelDB)', async (deliver) => {
  const dirA = await tempDir();
  const dirB = await tempDir();
  const storeA = await levelStorage({ path: dirA.path });
  const storeB = await levelStorage({ path: dirB.path });
  const a = await ws('a', storeA, deliver.a, { listen });
  const b = await ws('b', storeB, deliver.b, { listen, peers: { a: a.address!.url } });
  a.addPeer('b', b.address!.url);
  return {
    a,
    b,
    async close() {
      await Promise.all([a.close(), b.close()]);
      await Promise.all([storeA.close(), storeB.close()]);
      await Promise.all([dirA[Symbol.asyncDispose](), dirB[Symbol.asyncDispose]()]);
    },
  };
}, { describe, it, afterEach });

transportConformance('WebSocket (only b dials, memory)', async (deliver) => {
  const a = await ws('a', memoryStorage(), deliver.a, { listen });
  const b = await ws('b', memoryStorage(), deliver.b, { peers: { a: a.address!.url } });
  return { a, b, close: async () => void (await Promise.all([a.close(), b.close()])) };
}, { describe, it, afterEach });

/** A `ws-peer.ts` child process with its stdout lines. */
function spawnPeer(args: Record<string, unknown>) {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', FIXTURE, JSON.stringify({ secret: SECRET, ...args })], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exit = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const watched = watchLines(child.stdout!, exit, () => `${watched.lines.join('\n')}\n${stderr}`);
  return { child, exit, waitFor: (pattern: RegExp) => watched.waitFor(pattern).then(() => {}) };
}

describe('delivery over real sockets and LevelDB', () => {
  it('round-trips an envelope and orders 1000 envelopes in few frames', async () => {
    await using dirA = await tempDir();
    await using dirB = await tempDir();
    await using storeA = await levelStorage({ path: dirA.path });
    await using storeB = await levelStorage({ path: dirB.path });
    const atA = recorder();
    const atB = recorder();
    await using a = await ws('a', storeA, atA, { listen });
    await using b = await ws('b', storeB, atB, { peers: { a: a.address!.url } });
    await b.send('a', testEnvelope(0));
    await atA.until(1);
    await a.send('b', testEnvelope(1, { to: 'run_a/sender', from: 'run_b/receiver' }));
    await atB.until(1);
    expect([atA.received[0]!.from, atB.received[0]!.from]).toEqual(['b', 'a']);

    await Promise.all(Array.from({ length: 1000 }, (_, i) => b.send('a', testEnvelope(i + 10))));
    await b.flushed('a');
    await b.close(); // deletes of acknowledged entries are written after the ack; close waits for them
    expect(atA.received.slice(1).map((r) => r.envelope.id)).toEqual(Array.from({ length: 1000 }, (_, i) => `env_${i + 10}`));
    expect(atA.received.slice(1).map((r) => r.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 2));
    expect(b.stats().framesOut).toBeLessThan(100); // batched, not one frame per envelope
    expect(await keys(storeB, 'outbox:')).toEqual([]); // acknowledged entries are deleted
  });

  it('keeps the outbox across a sender restart and resends what was never acknowledged', async () => {
    await using dir = await tempDir();
    const nowhere = { b: 'ws://127.0.0.1:1' }; // nothing listens: every send stays in the outbox
    let store = await levelStorage({ path: dir.path });
    const first = await ws('a', store, recorder(), { peers: nowhere });
    for (let i = 0; i < 30; i++) await first.send('b', testEnvelope(i));
    expect(first.peers()).toEqual([expect.objectContaining({ nodeId: 'b', unacked: 30, acked: 0, state: expect.stringMatching(/connecting|backoff/) })]);
    await first.close();
    await store.close();

    store = await levelStorage({ path: dir.path });
    expect(await keys(store, 'outbox:b:')).toHaveLength(30);
    const atB = recorder();
    await using b = await ws('b', memoryStorage(), atB, { listen });
    await using second = await ws('a', store, recorder(), { peers: { b: b.address!.url } });
    await second.send('b', testEnvelope(30)); // numbering continues at 31
    await second.flushed('b');
    expect(atB.received.map((r) => r.seq)).toEqual(Array.from({ length: 31 }, (_, i) => i + 1));
    expect(atB.received.map((r) => r.envelope.id)).toEqual(Array.from({ length: 31 }, (_, i) => `env_${i}`));
    await second.close();
    expect(await keys(store, 'outbox:')).toEqual([]);
    await store.close();
  });

  it('drops duplicates after a receiver restart: each seq is delivered exactly once', async () => {
    await using dirA = await tempDir();
    await using dirB = await tempDir();
    await using storeA = await levelStorage({ path: dirA.path });
    await using a = await ws('a', storeA, recorder(), { listen });
    const counts = new Map<number, number>();
    const order: number[] = [];
    let first: WsTransport | undefined;
    let stop!: (closing: Promise<void>) => void;
    const stopped = new Promise<Promise<void>>((resolve) => (stop = resolve));
    const deliver: WsTransportOptions['deliver'] = async (_envelope, _from, { seq }) => {
      counts.set(seq, (counts.get(seq) ?? 0) + 1);
      order.push(seq);
      // Stop mid-batch: 101..120 are delivered and recorded but never acknowledged.
      if (seq === 120 && first?.status === 'open') stop(first.close());
    };
    let storeB = await levelStorage({ path: dirB.path });
    first = await ws('b', storeB, deliver, { peers: { a: a.address!.url } });
    await Promise.all(Array.from({ length: 200 }, (_, i) => a.send('b', testEnvelope(i))));
    await (await stopped);
    expect(order).toHaveLength(120);
    expect(a.peers()[0]!.acked).toBe(100);
    await storeB.close();

    storeB = await levelStorage({ path: dirB.path });
    const second = await ws('b', storeB, deliver, { peers: { a: a.address!.url } });
    await a.flushed('b');
    expect(second.stats().duplicates).toBeGreaterThan(0);
    expect(order).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
    await second.close();
    await storeB.close();
  });

  /** Sends 1,000 envelopes to a receiver process, SIGKILLs it after `killAfter`, restarts it, and returns its log and store. */
  async function receiverKilledMidStream(options: { killAfter: number; dedupe?: boolean }) {
    const dirA = await tempDir();
    const dirB = await tempDir();
    const storeA = await levelStorage({ path: dirA.path });
    const a = await ws('a', storeA, recorder(), { listen });
    const peer = { role: 'receiver', dir: dirB.path, nodeId: 'b', peer: { id: 'a', url: a.address!.url }, ...(options.dedupe ? { dedupe: true } : {}) };
    const first = spawnPeer({ ...peer, throttleMs: 1 });
    await Promise.all(Array.from({ length: 1000 }, (_, i) => a.send('b', testEnvelope(i + 1))));
    await first.waitFor(new RegExp(`^delivered ${options.killAfter}$`));
    first.child.kill('SIGKILL');
    expect((await first.exit).signal).toBe('SIGKILL');
    expect(a.peers()[0]!.acked).toBeLessThan(1000);

    const second = spawnPeer(peer);
    await a.flushed('b');
    second.child.kill('SIGTERM');
    expect((await second.exit).code).toBe(0);
    await a.close();
    await storeA.close();
    const storeB = await levelStorage({ path: dirB.path });
    const log: Array<{ seq: number; id: string }> = [];
    for await (const [, value] of storeB.entries(prefixRange('log:'))) log.push(decode(value, Infinity) as { seq: number; id: string });
    return {
      log,
      storeB,
      async [Symbol.asyncDispose]() {
        await storeB.close();
        await dirB[Symbol.asyncDispose]();
        await dirA[Symbol.asyncDispose]();
      },
    };
  }

  it('survives a receiver SIGKILLed mid-stream: after restart every envelope is delivered exactly once, in order', async () => {
    await using killed = await receiverKilledMidStream({ killAfter: 200 });
    expect(killed.log.map((l) => l.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    expect(killed.log.map((l) => l.id)).toEqual(Array.from({ length: 1000 }, (_, i) => `env_${i + 1}`));
  });

  it('survives a receiver SIGKILLed mid-frame while writing its cursor once per frame: after dedupe every envelope is delivered exactly once', async () => {
    await using killed = await receiverKilledMidStream({ killAfter: 250, dedupe: true });
    expect(killed.log.map((l) => l.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    expect(killed.log.map((l) => l.id)).toEqual(Array.from({ length: 1000 }, (_, i) => `env_${i + 1}`));
    // Only the frames being delivered together at the kill can come again (one cursor write
    // covers up to MERGE_MAX_ENVELOPES): the transport dropped the rest.
    const again = await keys(killed.storeB, 'dup:');
    expect(MERGE_MAX_ENVELOPES).toBeLessThan(1000);
    expect(again.length).toBeLessThanOrEqual(MERGE_MAX_ENVELOPES);
  });

  it('survives a sender SIGKILLed mid-stream: its outbox is resent on restart, duplicates dropped', async () => {
    await using dirA = await tempDir();
    await using dirB = await tempDir();
    await using storeA = await levelStorage({ path: dirA.path });
    const atA = recorder();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    atA.intercept = (_envelope, { seq }) => (seq > 500 ? gate : undefined); // holds the stream at 500
    await using a = await ws('a', storeA, atA, { listen });
    const peer = { role: 'sender', dir: dirB.path, nodeId: 'b', peer: { id: 'a', url: a.address!.url } };
    const first = spawnPeer({ ...peer, count: 1500 });
    await first.waitFor(/^sent$/);
    await atA.until(500);
    first.child.kill('SIGKILL');
    expect((await first.exit).signal).toBe('SIGKILL');
    release();

    const second = spawnPeer(peer);
    await atA.until(1500);
    await second.waitFor(/^ready$/);
    expect(atA.received.map((r) => r.seq)).toEqual(Array.from({ length: 1500 }, (_, i) => i + 1));
    expect(atA.received.map((r) => r.envelope.id)).toEqual(Array.from({ length: 1500 }, (_, i) => `env_${i + 1}`));
    expect(a.stats().duplicates).toBeGreaterThan(0);
    second.child.kill('SIGTERM');
    expect((await second.exit).code).toBe(0);
  });
});

describe('handshake security', () => {
  it('remembers nonces for twice the skew window and refuses handshakes while the cache is full', () => {
    let now = 1_000_000;
    const verifier = createHandshakeVerifier({ key: KEY, nodeId: 'a', now: () => now, maxSkewMs: 1_000, maxNonces: 2 });
    const first = clientHandshake(KEY, 'x', 'a', now);
    expect(verifier.verify(first)).toMatchObject({ ok: true, node: 'x' });
    expect(verifier.verify(first)).toEqual({ ok: false, reason: 'replay' });
    expect(verifier.verify(clientHandshake(KEY, 'y', 'a', now))).toMatchObject({ ok: true });
    expect(verifier.verify(clientHandshake(KEY, 'z', 'a', now))).toEqual({ ok: false, reason: 'busy' });
    now += 2_001;
    expect(verifier.verify(clientHandshake(KEY, 'z', 'a', now))).toMatchObject({ ok: true, node: 'z' });
    expect(verifier.verify(first)).toEqual({ ok: false, reason: 'stale' });
  });

  it('answers missing, badly signed, misaddressed, stale and replayed handshakes with 401 before upgrading', async () => {
    await using a = await ws('a', memoryStorage(), recorder(), { listen });
    const port = a.address!.port;
    const wrongKey = secretKey('not-the-cluster-secret-0123456789');
    expect(await upgrade(port, { 'sec-websocket-protocol': PROTOCOL })).toBe(401);
    expect(await upgrade(port, { ...clientHandshake(wrongKey, 'x', 'a', Date.now()), 'sec-websocket-protocol': PROTOCOL })).toBe(401);
    expect(await upgrade(port, { ...signed('x', 'a'), [HEADERS.node]: 'y' })).toBe(401); // tampered identity
    expect(await upgrade(port, signed('x', 'elsewhere'))).toBe(401); // signed for another listener
    expect(await upgrade(port, signed('a', 'a'))).toBe(401); // claims to be the listener itself
    expect(await upgrade(port, signed('x', 'a', Date.now() - 61_000))).toBe(401); // stale
    expect(await upgrade(port, signed('x', 'a', Date.now() + 61_000))).toBe(401); // from the future
    const fresh = signed('x', 'a');
    expect(await upgrade(port, fresh)).toBe(101);
    expect(await upgrade(port, fresh)).toBe(401); // replayed nonce
    // Upgraded, but never proven with a sealed hello: not counted as accepted.
    expect(a.stats()).toMatchObject({ accepted: 0, rejected: { unauthorized: 8, badProtocol: 0 } });
  });

  it('answers a wrong or missing subprotocol with 400 and plain HTTP with 426', async () => {
    await using a = await ws('a', memoryStorage(), recorder(), { listen });
    const port = a.address!.port;
    expect(await upgrade(port, { ...signed('x', 'a'), 'sec-websocket-protocol': 'chat, troupe.v1' })).toBe(400);
    const { 'sec-websocket-protocol': _omitted, ...bare } = signed('x', 'a');
    expect(await upgrade(port, bare)).toBe(400);
    expect((await fetch(`http://127.0.0.1:${port}/`)).status).toBe(426);
    expect(a.stats().rejected).toEqual({ unauthorized: 0, badProtocol: 2, badRequest: 0 });
  });

  it('refuses a listener that cannot prove it holds the secret, sending it nothing', async () => {
    const fake = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => PROTOCOL });
    await once(fake, 'listening');
    const received: unknown[] = [];
    const hungUp = new Promise<void>((resolve) =>
      fake.on('connection', (socket) => {
        socket.on('message', (data) => received.push(data));
        socket.on('close', () => resolve());
      }),
    );
    try {
      await using a = await ws('a', memoryStorage(), recorder(), { peers: { b: `ws://127.0.0.1:${(fake.address() as { port: number }).port}` } });
      await a.send('b', testEnvelope(1));
      await hungUp;
      expect(a.stats().closed.impostor).toBeGreaterThanOrEqual(1);
      expect(a.peers()[0]).toMatchObject({ nodeId: 'b', unacked: 1, lastError: expect.stringMatching(/did not prove/) });
      expect(received).toEqual([]);
    } finally {
      fake.close();
    }
  });
});

describe('hostile peers cost their own connection only', () => {
  async function target(extra: Extra = {}) {
    const at = recorder();
    const a = await ws('a', memoryStorage(), at, { listen, maxPayload: 64 * 1024, ...extra });
    const good = await ws('good', memoryStorage(), recorder(), { peers: { a: a.address!.url } });
    /** Proves `a` still serves a well-behaved peer. */
    const stillServes = async (i: number) => {
      await good.send('a', testEnvelope(i));
      await good.flushed('a');
      expect(at.received.at(-1)).toMatchObject({ from: 'good', envelope: { id: `env_${i}` } });
    };
    return { a, at, port: a.address!.port, stillServes, [Symbol.asyncDispose]: () => Promise.all([good.close(), a.close()]).then(() => {}) };
  }

  it('closes with 1009 on an oversized message and 1008/1003 on malformed frames', async () => {
    await using t = await target();
    await t.stillServes(1);
    const closeOf = async (client: SealedClient, data: Uint8Array | string) => {
      const closed = once(client.ws, 'close');
      if (typeof data === 'string' || data.byteLength > 64 * 1024) client.sendRaw(data);
      else client.send(data);
      return (await closed)[0] as number;
    };
    expect(await closeOf(await rawClient(t.port, 'big', 'a'), Buffer.alloc(100 * 1024))).toBe(1009);
    expect(await closeOf(await rawClient(t.port, 'junk', 'a'), Uint8Array.of(0xc1, 0xff, 0x00))).toBe(1008);
    expect(await closeOf(await rawClient(t.port, 'chatty', 'a'), 'hello')).toBe(1003);
    const forged = encodeFrame({ t: 'batch', epoch: 'ab'.repeat(8), items: [{ seq: 1, envelope: { ...testEnvelope(9), to: 'run b/actor' } }] });
    expect(await closeOf(await rawClient(t.port, 'forger', 'a'), forged)).toBe(1008);
    const unordered = encodeBatch('cd'.repeat(8), [
      { seq: 2, bytes: encodeEnvelope(testEnvelope(2)) },
      { seq: 1, bytes: encodeEnvelope(testEnvelope(1)) },
    ]);
    expect(await closeOf(await rawClient(t.port, 'shuffler', 'a'), unordered)).toBe(1008);
    await t.stillServes(2);
    expect(t.a.stats().closed).toMatchObject({ oversized: 1, malformed: 4 });
    expect(t.at.received.map((r) => r.from)).toEqual(['good', 'good']);
  });

  it('closes a peer that acknowledges more than it was sent', async () => {
    await using t = await target();
    const liar = await rawClient(t.port, 'liar', 'a');
    const batch = once(liar.ws, 'message');
    await t.a.send('liar', testEnvelope(1));
    const { epoch } = decode(liar.open((await batch)[0])) as { epoch: string };
    const closed = once(liar.ws, 'close');
    liar.send(encodeFrame({ t: 'ack', epoch, upTo: 5 }));
    expect((await closed)[0]).toBe(1008);
    expect(t.a.peers().find((p) => p.nodeId === 'liar')).toMatchObject({ unacked: 1, acked: 0 });
    await t.stillServes(1);
  });

  it('closes a connection flooding continuation frames after a valid upgrade', async () => {
    await using t = await target();
    const socket = await rawSocket(t.port, 'flood', 'a');
    socket.on('error', () => {}); // the server may hang up while we still write
    const code = closeCode(socket);
    socket.write(Buffer.concat([frame(0x2, false, Uint8Array.of(1)), ...Array.from({ length: 500 }, () => frame(0x0, false, Uint8Array.of(1)))]));
    expect(await code).toBe(1008);
    expect(t.a.stats().closed.fragmented).toBe(1);
    await t.stillServes(1);
  });

  it('cuts off a peer that stops answering pings', async () => {
    await using t = await target({ heartbeatMs: 50 });
    const socket = await rawSocket(t.port, 'mute', 'a'); // reads nothing, answers nothing
    socket.on('error', () => {});
    await once(socket, 'close');
    expect(t.a.stats().closed.deadPeer).toBe(1);
    await t.stillServes(1);
  });
});

describe('protocol behaviour', () => {
  it('restarts the receiver cursor when a sender returns with a fresh outbox (new epoch)', async () => {
    const at = recorder();
    await using b = await ws('b', memoryStorage(), at, { listen });
    const first = await ws('a', memoryStorage(), recorder(), { peers: { b: b.address!.url } });
    await first.send('b', testEnvelope(1));
    await first.send('b', testEnvelope(2));
    await first.flushed('b');
    await first.close();
    await using second = await ws('a', memoryStorage(), recorder(), { peers: { b: b.address!.url } });
    await second.send('b', testEnvelope(3));
    await second.flushed('b');
    expect(at.received.map((r) => [r.envelope.id, r.seq])).toEqual([['env_1', 1], ['env_2', 2], ['env_3', 1]]);
    expect(b.stats().epochResets).toBe(1);
  });

  it('reports dead letters and keeps going', async () => {
    const dead: Array<[string, string, string]> = [];
    const at = recorder();
    at.intercept = (envelope) => {
      if (envelope.id === 'env_2') throw new TroupeError(ErrorCode.UNKNOWN_ACTOR, `no active actor at ${envelope.to}`);
    };
    await using a = await ws('a', memoryStorage(), at, { listen, onDeadLetter: (e, from, error) => dead.push([e.id, from, (error as TroupeError).code]) });
    await using b = await ws('b', memoryStorage(), recorder(), { peers: { a: a.address!.url } });
    for (let i = 1; i <= 3; i++) await b.send('a', testEnvelope(i));
    await b.flushed('a');
    expect(dead).toEqual([['env_2', 'b', 'UNKNOWN_ACTOR']]);
    expect(at.received.map((r) => r.envelope.id)).toEqual(['env_1', 'env_3']);
    expect(a.stats().deadLetters).toBe(1);
  });

  it('keeps order under backpressure with tiny buffers and a slow receiver', async () => {
    const at = recorder();
    at.intercept = () => new Promise<void>((resolve) => setImmediate(resolve));
    await using a = await ws('a', memoryStorage(), at, { listen, maxBufferedBytes: 4096 });
    await using b = await ws('b', memoryStorage(), recorder(), { peers: { a: a.address!.url }, maxBufferedBytes: 4096, batchMaxEnvelopes: 10 });
    const text = 'x'.repeat(2000);
    await Promise.all(Array.from({ length: 400 }, (_, i) => b.send('a', testEnvelope(i, { payload: { i, text } }))));
    await b.flushed('a');
    expect(at.received.map((r) => r.seq)).toEqual(Array.from({ length: 400 }, (_, i) => i + 1));
  });

  it('refuses misuse with TypeErrors and envelopes that can never fit a frame with FRAME_TOO_LARGE', async () => {
    const base = { nodeId: 'a', storage: memoryStorage(), secret: SECRET, deliver: async () => {} };
    await expect(createWsTransport({ ...base, secret: 'short' })).rejects.toThrow(/at least 16 bytes/);
    await expect(createWsTransport({ ...base, nodeId: 'a:1' })).rejects.toThrow(TypeError);
    await expect(createWsTransport({ ...base, peers: { a: 'ws://127.0.0.1:1' } })).rejects.toThrow(/is this node/);
    await expect(createWsTransport({ ...base, peers: { b: 'http://127.0.0.1:1' } })).rejects.toThrow(/ws:\/\//);
    await expect(createWsTransport({ ...base, batchMaxEnvelopes: 5000 })).rejects.toThrow(/batchMaxEnvelopes/);
    await using t = await createWsTransport(base);
    await expect(t.send('b', testEnvelope(1, { payload: 'x'.repeat(1024 * 1024) }))).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'FRAME_TOO_LARGE'));
    expect(() => t.addPeer('b', 'nope')).toThrow(TypeError);
    expect(t.peers()).toEqual([]);
    await using taken = await ws('c', memoryStorage(), recorder(), { listen });
    await expect(ws('d', memoryStorage(), recorder(), { listen: { port: taken.address!.port } })).rejects.toSatisfy(
      (e: unknown) => isTroupeError(e, 'LISTEN_FAILED') && /port is in use/.test((e as Error).message),
    );
  });
});

describe('plugged into createNode', () => {
  it('runs a crew whose writer lives on another node, over real sockets and LevelDB', async () => {
    await using dirA = await tempDir();
    await using dirB = await tempDir();
    await using storeA = await levelStorage({ path: dirA.path });
    await using storeB = await levelStorage({ path: dirB.path });
    const models = () => ({ scripted: scriptedModel({ script: pairScript }) });
    const atA = wsTransport({ secret: SECRET, listen });
    await using a = await createNode({ nodeId: 'a', storage: storeA, transport: atA, crews: [placedCrew()], models: models() });
    // b has no listener: it dials a, and a's mail for b travels back on that connection.
    const atB = wsTransport({ secret: SECRET, peers: { a: (await atA.created).address!.url }, reconnectMinMs: 10 });
    await using b = await createNode({ nodeId: 'b', storage: storeB, transport: atB, crews: [placedCrew()], models: models() });
    const partDone = new Promise<void>((resolve) => b.subscribe((e) => e.type === 'run.completed' && e.runId === 'w1' && resolve()));
    const run = await a.run(placedCrew(), { input: 'brief me', runId: 'w1' });
    expect((await run.result()).output).toBe('final: a brief about actor and state');
    await partDone;
    expect((await b.runs())[0]).toMatchObject({ id: 'w1', status: 'completed', part: { origin: 'a', actors: ['writer'] } });
    const [tA, tB] = [await atA.created, await atB.created];
    expect(tA.stats().delivered).toBeGreaterThan(0);
    expect(tB.stats().delivered).toBeGreaterThan(0);
    await expect(atA({ nodeId: 'c', storage: storeA, deliver: async () => {} })).rejects.toThrow(TypeError);
  });
});
