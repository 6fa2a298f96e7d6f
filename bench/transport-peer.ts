/**
 * The far side of bench/transport.ts, run in its own process:
 *
 *   node --import tsx bench/transport-peer.ts troupe <dir> <batchMaxEnvelopes> <secret> [batch|send]
 *   node --import tsx bench/transport-peer.ts raw
 *   node --import tsx bench/transport-peer.ts raw-durable <dir>
 *   node --import tsx bench/transport-peer.ts raw-sealed-stream|raw-durable-stream <dir> <keyHex>
 *
 * `troupe`: a Troupe WebSocket transport (node id `peer`) on a LevelDB at `<dir>`, listening
 * on 127.0.0.1; every envelope of type `ping` is answered with a `pong` to its sender,
 * anything else is only counted. `raw`: a bare `ws` server speaking msgpackr: a frame holding
 * an array of envelopes is answered with `{ upTo }` (the count received so far), single
 * envelopes are acknowledged the same way every 100, and a `ping` comes back as a `pong`.
 * `raw-durable`: the same server, writing each `ping` to a LevelDB at `<dir>` (classic-level
 * itself, one batch, no sync) before its `pong` goes back: a round trip's floor when the
 * envelope must be durable on the receiving side before it is answered.
 *
 * Prints `{"port":N}` on stdout once listening; answers a line `cpu` on stdin with
 * `{"cpuUs":N}`, the CPU time it used so far; exits on SIGTERM or when stdin closes.
 */
import { Packr, Unpackr } from 'msgpackr';
import { WebSocketServer, type RawData } from 'ws';
import { createWsTransport, type WsTransport } from '../transports/index.js';
import { ClassicLevel } from 'classic-level';
import { createInterface } from 'node:readline';
import { levelStorage } from '../storage/level.js';
import type { Envelope } from '../index.js';
import { envelopeIssue } from '../core/envelope.js';
import { createFrameSeal } from '../transports/session.js';

const [mode, dir, batch, secret, answer = 'batch'] = process.argv.slice(2);

/** Loopback only: the benchmark never talks to anything but this machine. */
const HOST = '127.0.0.1';

async function troupePeer(): Promise<() => Promise<void>> {
  const storage = await levelStorage({ path: dir! });
  let transport!: WsTransport;
  let pongs = 0;
  transport = await createWsTransport({
    nodeId: 'peer',
    secret: secret!,
    storage,
    listen: { host: HOST, port: 0 },
    batchMaxEnvelopes: Number(batch),
    deliver: async (envelope: Envelope, fromNode: string, receipt) => {
      if (envelope.type !== 'ping') return;
      pongs += 1;
      // Answered over the connection the sender dialled (this peer has no url for it).
      const pong: Envelope = { ...envelope, id: `pong-${pongs}`, from: envelope.to, to: envelope.from, type: 'pong' };
      if (answer === 'send') return transport.send(fromNode, pong);
      // As a node's run answers: the answer's outbox entry and the ping's receipt in one
      // atomic storage batch (the transport then writes no cursor of its own for the ping).
      const reserved = transport.reserve?.(fromNode, pong);
      if (!reserved) return transport.send(fromNode, pong);
      try {
        await storage.write([...reserved.ops, ...receipt.takeCursorOps()]);
      } catch (error) {
        reserved.abort();
        throw error;
      }
      reserved.commit();
    },
  });
  process.stdout.write(`${JSON.stringify({ port: transport.address!.port })}\n`);
  return async () => {
    await transport.close();
    await storage.close();
  };
}

/**
 * What every raw mode starts with: its LevelDB at `durableDir` (when it has one), the coders
 * raw uses, and a listening server whose port is printed; `stop` closes both.
 */
async function rawServer(durableDir: string | undefined) {
  const db = durableDir === undefined ? undefined : new ClassicLevel<string, Uint8Array>(durableDir, { keyEncoding: 'utf8', valueEncoding: 'view' });
  await db?.open();
  const packr = new Packr({ useRecords: false });
  const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });
  const server = new WebSocketServer({ host: HOST, port: 0, perMessageDeflate: false, maxPayload: 1024 * 1024 });
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const address = server.address();
  // No client can connect before the caller, in this same turn, attached its handlers.
  process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`);
  return {
    db,
    packr,
    unpackr,
    server,
    async stop() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await db?.close();
    },
  };
}

/**
 * `raw-sealed-stream <dir> <keyHex>` and `raw-durable-stream <dir> <keyHex>`: the receiving
 * side of bench/transport.ts's stream floors. Each frame (an array of envelopes, sealed by
 * Troupe's `createFrameSeal`) is opened, decoded, and every envelope checked against the
 * envelope rule; a bad frame ends the connection. Sealed:
 * acknowledged with `{ upTo }` (the count received) at once. Durable: the count is written
 * to a LevelDB at `<dir>` first, one write in flight, frames arriving meanwhile sharing the
 * next, and acknowledged once written. No delivery envelope by envelope.
 */
async function rawStreamPeer(durableDir: string, keyHex: string, durable: boolean): Promise<() => Promise<void>> {
  const key = Buffer.from(keyHex, 'hex');
  const { db, packr, unpackr, server, stop } = await rawServer(durable ? durableDir : undefined);
  server.on('connection', (socket) => {
    const seal = createFrameSeal({ clientToServer: key, serverToClient: key }, 'server');
    let received = 0;
    let writing = false;
    let written = 0;
    const writeCursor = (store: ClassicLevel<string, Uint8Array>) => {
      if (writing || written === received) return;
      writing = true;
      const upTo = received;
      void store.batch([{ type: 'put', key: 'in:cursor', value: packr.pack(upTo) }]).then(() => {
        writing = false;
        written = upTo;
        socket.send(packr.pack({ upTo }));
        writeCursor(store);
      });
    };
    socket.on('message', (data: RawData) => {
      const body = seal.open(data as Buffer);
      if (!body) return socket.terminate();
      const value = unpackr.unpack(body) as unknown;
      if (!Array.isArray(value) || value.some((e) => envelopeIssue(e) !== undefined)) return socket.terminate();
      received += value.length;
      if (db) writeCursor(db);
      else socket.send(packr.pack({ upTo: received }));
    });
  });
  return stop;
}

async function rawPeer(durableDir?: string): Promise<() => Promise<void>> {
  const { db, packr, unpackr, server, stop } = await rawServer(durableDir);
  server.on('connection', (socket) => {
    let received = 0;
    socket.on('message', (data: RawData) => {
      const value = unpackr.unpack(data as Buffer) as Envelope | Envelope[];
      if (Array.isArray(value)) {
        received += value.length;
        socket.send(packr.pack({ upTo: received }));
      } else if (value.type === 'ping') {
        const pong = () => socket.send(packr.pack({ ...value, from: value.to, to: value.from, type: 'pong' }));
        if (db) void db.batch([{ type: 'put', key: `in:${value.id}`, value: data as Buffer }]).then(pong);
        else pong();
      } else {
        // One envelope per frame: acknowledged every 100, as the batched variant is.
        received += 1;
        if (received % 100 === 0) socket.send(packr.pack({ upTo: received }));
      }
    });
  });
  return stop;
}

const close =
  mode === 'troupe' ? await troupePeer() : mode === 'raw-durable-stream' || mode === 'raw-sealed-stream' ? await rawStreamPeer(dir!, batch!, mode === 'raw-durable-stream') : await rawPeer(mode === 'raw-durable' ? dir : undefined);
let closing = false;
const shutdown = () => {
  if (closing) return;
  closing = true;
  void close().finally(() => process.exit(0));
};
process.on('SIGTERM', shutdown);
// The parent holds our stdin; if it dies, we go too. A line `cpu` asks for the CPU time this
// process used so far (every thread), answered with one line of JSON.
process.stdin.on('end', shutdown);
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() !== 'cpu') return;
  const { user, system } = process.cpuUsage();
  process.stdout.write(`${JSON.stringify({ cpuUs: user + system })}\n`);
});
