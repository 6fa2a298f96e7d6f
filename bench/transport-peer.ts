/**
 * The far side of bench/transport.ts, run in its own process:
 *
 *   node --import tsx bench/transport-peer.ts troupe <dir> <batchMaxEnvelopes> <secret>
 *   node --import tsx bench/transport-peer.ts raw
 *   node --import tsx bench/transport-peer.ts raw-durable <dir>
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
 * Prints `{"port":N}` on stdout once listening; exits on SIGTERM or when stdin closes.
 */
import { Packr, Unpackr } from 'msgpackr';
import { WebSocketServer, type RawData } from 'ws';
import { createWsTransport, type WsTransport } from '../transports/index.js';
import { ClassicLevel } from 'classic-level';
import { levelStorage } from '../storage/level.js';
import type { Envelope } from '../index.js';

const [mode, dir, batch, secret] = process.argv.slice(2);

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
    deliver: async (envelope: Envelope, fromNode: string) => {
      if (envelope.type !== 'ping') return;
      pongs += 1;
      // Answered over the connection the sender dialled (this peer has no url for it).
      await transport.send(fromNode, { ...envelope, id: `pong-${pongs}`, from: envelope.to, to: envelope.from, type: 'pong' });
    },
  });
  process.stdout.write(`${JSON.stringify({ port: transport.address!.port })}\n`);
  return async () => {
    await transport.close();
    await storage.close();
  };
}

async function rawPeer(durableDir?: string): Promise<() => Promise<void>> {
  const db = durableDir === undefined ? undefined : new ClassicLevel<string, Uint8Array>(durableDir, { keyEncoding: 'utf8', valueEncoding: 'view' });
  await db?.open();
  const packr = new Packr({ useRecords: false });
  const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });
  const server = new WebSocketServer({ host: HOST, port: 0, perMessageDeflate: false, maxPayload: 1024 * 1024 });
  await new Promise<void>((resolve) => server.once('listening', resolve));
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
  const address = server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 })}\n`);
  return async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await db?.close();
  };
}

const close = mode === 'troupe' ? await troupePeer() : await rawPeer(mode === 'raw-durable' ? dir : undefined);
let closing = false;
const shutdown = () => {
  if (closing) return;
  closing = true;
  void close().finally(() => process.exit(0));
};
process.on('SIGTERM', shutdown);
// The parent holds our stdin; if it dies, we go too.
process.stdin.on('end', shutdown);
process.stdin.resume();
