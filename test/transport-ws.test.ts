import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { decode } from '../core/codec.js';
import { ErrorCode, isTroupeError, TroupeError } from '../core/errors.js';
import { prefixRange, type Storage } from '../core/storage.js';
import { levelStorage } from '../storage/level.js';
import { memoryStorage } from '../storage/memory.js';
import { clientHandshake, encodeBatch, encodeFrame, HEADERS, PROTOCOL, secretKey } from '../transports/index.js';
import { encodeEnvelope } from '../core/envelope.js';
import { createWsTransport, type WsTransport, type WsTransportOptions } from '../transports/ws.js';
import { tempDir } from './helpers/temp.js';
import { recorder, testEnvelope, transportConformance, type Recorder } from './transport-conformance.js';

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

/** An authenticated WebSocket client speaking raw frames (for hostile peers). */
async function rawClient(port: number, from: string, to: string): Promise<WebSocket> {
  const client = new WebSocket(`ws://127.0.0.1:${port}`, [PROTOCOL], { headers: clientHandshake(KEY, from, to, Date.now()), perMessageDeflate: false });
  await once(client, 'open');
  return client;
}

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
});

transportConformance('WebSocket (only b dials, memory)', async (deliver) => {
  const a = await ws('a', memoryStorage(), deliver.a, { listen });
  const b = await ws('b', memoryStorage(), deliver.b, { peers: { a: a.address!.url } });
  return { a, b, close: async () => void (await Promise.all([a.close(), b.close()])) };
});
