import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { decode } from '../core/codec.js';
import { encodeEnvelope } from '../core/envelope.js';
import { prefixRange } from '../core/storage.js';
import { levelStorage } from '../storage/level.js';
import { memoryStorage } from '../storage/memory.js';
import { recorder, testEnvelope } from '../testing/transport-conformance.js';
import { encodeBatch, MAC_BYTES } from '../transports/index.js';
import { createWsTransport, type WsTransportStats } from '../transports/ws.js';
import { watchLines } from './helpers/lines.js';
import { tcpProxy } from './helpers/tcp-proxy.js';
import { tempDir } from './helpers/temp.js';

const SECRET = 'session-test-secret-0123456789';
const FIXTURE = fileURLToPath(new URL('./fixtures/ws-peer.ts', import.meta.url));
const listen = { host: '127.0.0.1', port: 0 } as const;

/** A listening `ws-peer.ts` child (its own process, so a restart forgets everything in memory). */
async function listenerProcess(dir: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, JSON.stringify({ role: 'listener', dir, nodeId: 'a', secret: SECRET })], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exit = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const lines = watchLines(child.stdout!, exit, () => `${lines.lines.join('\n')}\n${stderr}`);
  const url = (await lines.waitFor(/^listening /)).slice('listening '.length);
  await lines.waitFor(/^ready$/);
  return {
    url,
    port: Number(new URL(url).port),
    /** SIGTERM, and the transport's stats it printed on the way out. */
    async stop(): Promise<WsTransportStats> {
      child.kill('SIGTERM');
      const line = await lines.waitFor(/^stats /);
      await exit;
      return JSON.parse(line.slice('stats '.length)) as WsTransportStats;
    },
  };
}

/** A masked client WebSocket frame (binary, final). */
function maskedFrame(payload: Uint8Array): Buffer {
  const mask = randomBytes(4);
  const len = payload.byteLength;
  const header = len < 126 ? Buffer.from([0x82, 0x80 | len]) : Buffer.from([0x82, 0x80 | 126, len >> 8, len & 0xff]);
  return Buffer.concat([header, mask, Buffer.from(payload).map((byte, i) => byte ^ mask[i % 4]!)]);
}

/** Writes a recorded upgrade request to `port`; resolves with the socket and the response's status line. */
async function replayHandshake(port: number, request: Buffer): Promise<{ socket: Socket; status: string; closed: Promise<unknown> }> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  const closed = once(socket, 'close');
  await once(socket, 'connect');
  socket.write(request);
  let head = '';
  while (!head.includes('\r\n\r\n')) head += ((await once(socket, 'data')) as [Buffer])[0].toString('latin1');
  return { socket, status: head.slice(0, head.indexOf('\r\n')), closed };
}

async function logged(dir: string): Promise<string[]> {
  await using storage = await levelStorage({ path: dir });
  const ids: string[] = [];
  for await (const [, value] of storage.entries(prefixRange('log:'))) ids.push((decode(value, Infinity) as { id: string }).id);
  return ids;
}

describe('a recorded handshake is worthless', () => {
  it('is refused after the listener restarts: replayed whole, or followed by an injected batch, nothing is delivered', async () => {
    await using dir = await tempDir();
    let listener = await listenerProcess(dir.path);
    let target = listener;
    await using proxy = await tcpProxy(() => ({ host: '127.0.0.1', port: target.port }));
    const b = await createWsTransport({ nodeId: 'b', storage: memoryStorage(), secret: SECRET, deliver: async () => {}, peers: { a: proxy.url }, reconnectMinMs: 10 });
    await b.send('a', testEnvelope(1));
    await b.flushed('a');
    await b.close();
    const recorded = Buffer.concat((await proxy.connection(0)).fromClient);
    const cut = recorded.indexOf('\r\n\r\n') + 4;
    const [request, frames] = [recorded.subarray(0, cut), recorded.subarray(cut)];
    expect(request.toString('latin1')).toMatch(/^GET .*x-troupe-sig: [0-9a-f]{64}/s);
    expect((await listener.stop()).accepted).toBe(1);

    // Restarted: its memory of nonces is gone, and the handshake is still inside the clock window.
    listener = await listenerProcess(dir.path);
    const whole = await replayHandshake(listener.port, request);
    expect(whole.status).toMatch(/ 101 /); // signed and fresh: only the challenge tells it apart
    whole.socket.write(frames); // the old hello and batch, sealed with the old connection's keys
    await whole.closed;

    const stats1 = await listener.stop();
    expect(stats1).toMatchObject({ accepted: 0, delivered: 0, closed: { unproven: 1 } });

    // Restarted again, the handshake replayed alone, then a run injected in a batch of a new epoch.
    listener = target = await listenerProcess(dir.path);
    const injected = await replayHandshake(listener.port, request);
    expect(injected.status).toMatch(/ 101 /);
    const spawn = testEnvelope(2, { from: 'x1/crew', to: 'x1/_part.a', type: 'troupe.spawn', payload: { crew: 'c', version: '1', input: 'pwn', origin: 'b', actors: ['writer'] } });
    const batch = encodeBatch('ee'.repeat(8), [{ seq: 1, bytes: encodeEnvelope(spawn) }]);
    injected.socket.write(maskedFrame(Buffer.concat([batch, randomBytes(MAC_BYTES)])));
    await injected.closed;
    expect(await listener.stop()).toMatchObject({ accepted: 0, delivered: 0, closed: { unproven: 1 } });
    expect(await logged(dir.path)).toEqual(['env_1']);
  }, 60_000);
});

describe('frames on an established connection cannot be altered or injected', () => {
  async function setup() {
    const dir = await tempDir();
    const storage = await levelStorage({ path: dir.path });
    const at = recorder();
    const a = await createWsTransport({ nodeId: 'a', storage, secret: SECRET, deliver: at.deliver, listen });
    const proxy = await tcpProxy(() => a.address!);
    const b = await createWsTransport({ nodeId: 'b', storage: memoryStorage(), secret: SECRET, deliver: async () => {}, peers: { a: proxy.url }, reconnectMinMs: 10, reconnectMaxMs: 50 });
    const good = await createWsTransport({ nodeId: 'good', storage: memoryStorage(), secret: SECRET, deliver: async () => {}, peers: { a: a.address!.url } });
    return {
      a, b, at, proxy, good,
      ids: (from: string) => at.received.filter((r) => r.from === from).map((r) => r.envelope.id),
      async [Symbol.asyncDispose]() {
        await Promise.all([b.close(), good.close()]);
        await proxy[Symbol.asyncDispose]();
        await a.close();
        await storage.close();
        await dir[Symbol.asyncDispose]();
      },
    };
  }

  it('closes the connection on a flipped byte, delivers nothing from it, and takes the resent frame on the next connection', async () => {
    await using t = await setup();
    await t.b.send('a', testEnvelope(1));
    await t.b.flushed('a');
    const first = await t.proxy.connection(0);
    let flipped = false;
    t.proxy.tamper = (chunk, conn) => {
      if (flipped || conn !== first || chunk.byteLength < 64) return chunk;
      flipped = true;
      const copy = Buffer.from(chunk);
      copy[copy.byteLength - 1]! ^= 0x01;
      return copy;
    };
    const cut = once(first.client, 'close');
    await t.b.send('a', testEnvelope(2));
    await cut;
    expect(flipped).toBe(true);
    expect(t.ids('b')).toEqual(['env_1']);
    await t.b.flushed('a'); // resent on a new connection through the (now honest) proxy
    expect(t.ids('b')).toEqual(['env_1', 'env_2']);
    expect(t.a.stats().closed.forged).toBe(1);
    await t.good.send('a', testEnvelope(3));
    await t.good.flushed('a');
    expect(t.ids('good')).toEqual(['env_3']);
    expect(t.a.status).toBe('open');
  });

  it('closes the connection on a frame replayed into it, without treating it as a duplicate', async () => {
    await using t = await setup();
    await t.b.send('a', testEnvelope(1));
    await t.b.flushed('a');
    const conn = await t.proxy.connection(0);
    let captured: Buffer | undefined;
    t.proxy.tamper = (chunk) => ((captured ??= chunk.byteLength >= 64 ? Buffer.from(chunk) : undefined), chunk);
    await t.b.send('a', testEnvelope(2));
    await t.b.flushed('a');
    expect(captured).toBeDefined();
    const cut = once(conn.client, 'close');
    conn.inject(captured!); // the same batch, tag and all, a second time
    await cut;
    expect(t.a.stats()).toMatchObject({ duplicates: 0, closed: { forged: 1 } });
    await t.b.send('a', testEnvelope(3));
    await t.b.flushed('a');
    expect(t.ids('b')).toEqual(['env_1', 'env_2', 'env_3']);
  });
});
