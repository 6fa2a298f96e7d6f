/**
 * Cross-process messaging through the Troupe WebSocket transport, next to raw `ws` +
 * msgpackr measured in the same run. The far side is a child process
 * (bench/transport-peer.ts, run as this process runs: compiled or through tsx) on 127.0.0.1; envelopes are
 * ~200 B of msgpack.
 *
 * - throughput: N envelopes sent back-to-back; timed until the peer acknowledged the last.
 *   Each row runs a warm-up burst, then `repeats` (5) timed bursts, and reports the median.
 *   Troupe: `transport.send` for each (durably appended to the LevelDB outbox; sends of one
 *   tick share a batch), then `flushed(peer)`: the peer delivered every one in order and
 *   persisted its cursor. Raw: frames of 100 envelopes (`Packr.pack(array)`), or one envelope
 *   per frame, acknowledged every 100 envelopes; nothing persisted, nothing validated.
 * - round trip: one `ping` at a time, answered by a `pong` from the peer. Troupe: the pong
 *   durable on the peer's side before it leaves, written in one batch with the ping's
 *   receipt (as a run records what it received with what it sends); and, as a second row,
 *   answered through `send`, the transport then writing the ping's cursor on its own.
 * - floors: raw ws + msgpackr doing only what the transport's guarantees need. The round
 *   trip with a LevelDB write on each side; a batched stream whose frames are tagged
 *   (HMAC-SHA256) and whose envelopes are checked on arrival, and the same stream durable
 *   at both ends (see {@link rawStreamFloor}). No transport keeping those guarantees can
 *   pass them on this machine.
 * - CPU: every throughput row reports the CPU time its timed bursts cost both processes per
 *   envelope (`cpuPerEnvelope`, see {@link cpuMeter}), and the rate that CPU time allows on
 *   this machine's cores at best.
 *
 * Batched = the transport's default `batchMaxEnvelopes: 100`; one per frame = 1.
 *
 *   node scripts/bench.js transport [--quick] [--burst N]
 *
 * Prints one JSON object. Not a test: nothing is asserted.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { Packr, Unpackr } from 'msgpackr';
import WebSocket from 'ws';
import { encodeEnvelope } from '../advanced.js';
import type { Envelope } from '../index.js';
import { levelStorage } from '../storage/level.js';
import { memoryStorage } from '../storage/memory.js';
import { createWsTransport } from '../transports/index.js';
import { createFrameSeal } from '../transports/session.js';
import { childScript, machineInfo, percentile, round, summarize, tempDir } from './durable-step.js';

const PEER = new URL('./transport-peer.ts', import.meta.url);

/** An envelope of about 200 bytes of msgpack. */
function envelope(i: number, type = 'bulk'): Envelope {
  return { id: `env_${String(i).padStart(10, '0')}`, from: 'run_bench0001/sender', to: 'run_bench0001/receiver', type, payload: { n: i, text: 'y'.repeat(84) }, seq: 0, ts: Date.now() };
}

type Peer = {
  proc: ChildProcessByStdio<Writable, Readable, Readable>;
  port: number;
  /** CPU time the peer process used so far (all its threads), in microseconds. */
  cpuUs(): Promise<number>;
  stop(): Promise<void>;
};

/** Starts bench/transport-peer.ts with `args`; resolves once it printed its port. */
function startPeer(args: string[]): Promise<Peer> {
  const proc = spawn(process.execPath, [...childScript(PEER), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  // The first line is the port; each later one answers a `cpu` request, in order.
  const answers: Array<(line: string) => void> = [];
  let listening = false;
  return new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout }).on('line', (line) => {
      if (listening) return answers.shift()?.(line);
      listening = true;
      const { port } = JSON.parse(line) as { port: number };
      resolve({
        proc,
        port,
        cpuUs() {
          return new Promise<number>((answer) => {
            answers.push((reply) => answer((JSON.parse(reply) as { cpuUs: number }).cpuUs));
            proc.stdin.write('cpu\n');
          });
        },
        async stop() {
          proc.kill('SIGTERM');
          await exited;
        },
      });
    });
    proc.once('exit', (code) => reject(new Error(`transport peer exited ${code} before listening: ${stderr.slice(-2000)}`)));
  });
}

// ---- raw ws + msgpackr -------------------------------------------------------------------

/** A bare `ws` connection to the raw peer, and the msgpackr coders both raw sides use. */
async function rawConnection(port: number) {
  const packr = new Packr({ useRecords: false });
  const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });
  const socket = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
  await new Promise<void>((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  });
  return { packr, unpackr, socket };
}

async function rawSide(throughputN: number, roundTrips: number, perFrame: number, repeats: number) {
  const peer = await startPeer(['raw']);
  const { packr, unpackr, socket } = await rawConnection(peer.port);
  let onMessage: (value: { upTo?: number; type?: string; id?: string }) => void = () => {};
  socket.on('message', (data: Buffer) => onMessage(unpackr.unpack(data)));
  try {
    const roundTrip = async (i: number) => {
      const t = performance.now();
      const back = new Promise<void>((resolve) => (onMessage = (v) => v.type === 'pong' && resolve()));
      socket.send(packr.pack(envelope(i, 'ping')));
      await back;
      return performance.now() - t;
    };
    for (let i = 0; i < 100; i++) await roundTrip(i); // warm-up
    const rtt: number[] = [];
    for (let i = 0; i < roundTrips; i++) rtt.push(await roundTrip(i));

    const cpu = cpuMeter(peer);
    const throughput = async (n: number, offset: number, timed: boolean) => {
      const envelopes = Array.from({ length: n }, (_, i) => envelope(i));
      let target = 0;
      if (timed) await cpu.start();
      const start = performance.now();
      const acked = new Promise<void>((resolve) => (onMessage = (v) => v.upTo !== undefined && v.upTo >= target && resolve()));
      target = offset + n;
      // Encoding is part of the cost, as it is for the transport; frames are queued by ws.
      if (perFrame === 1) for (const e of envelopes) socket.send(packr.pack(e));
      else for (let i = 0; i < n; i += perFrame) socket.send(packr.pack(envelopes.slice(i, i + perFrame)));
      await acked;
      const ms = performance.now() - start;
      if (timed) await cpu.stop();
      return ms;
    };
    let offset = 0;
    const bursts: number[] = [];
    for (let i = 0; i <= repeats; i++) {
      const ms = await throughput(throughputN, offset, i > 0);
      offset += throughputN;
      if (i > 0) bursts.push(ms); // the first is the warm-up
    }
    return {
      envelopesPerFrame: perFrame,
      throughput: { ...burstSummary(throughputN, bursts), cpuPerEnvelope: cpu.perEnvelope(throughputN * repeats) },
      roundTrip: summarize(rtt),
    };
  } finally {
    socket.close();
    await peer.stop();
  }
}

/**
 * The round trip's floor for an envelope durable on both sides before it moves on: raw ws +
 * msgpackr, the sender writing each ping to LevelDB (classic-level itself, no sync) before it
 * sends it, the peer writing it before it answers. No validation, no sealing, no outbox.
 */
async function rawDurableRoundTrip(root: string, roundTrips: number) {
  const peerDir = join(root, 'raw-durable-peer');
  await mkdir(peerDir, { recursive: true });
  const peer = await startPeer(['raw-durable', peerDir]);
  const db = new ClassicLevel<string, Uint8Array>(join(root, 'raw-durable-local'), { keyEncoding: 'utf8', valueEncoding: 'view' });
  await db.open();
  const { packr, unpackr, socket } = await rawConnection(peer.port);
  let onPong: () => void = () => {};
  socket.on('message', (data: Buffer) => (unpackr.unpack(data) as { type?: string }).type === 'pong' && onPong());
  try {
    const roundTrip = async (i: number) => {
      const t = performance.now();
      const e = envelope(i, 'ping');
      e.id = `ping_${i}`;
      const bytes = packr.pack(e);
      const back = new Promise<void>((resolve) => (onPong = resolve));
      await db.batch([{ type: 'put', key: `out:${e.id}`, value: bytes }]); // no options: see storage/level.ts
      socket.send(bytes);
      await back;
      return performance.now() - t;
    };
    for (let i = 0; i < 100; i++) await roundTrip(i); // warm-up
    const rtt: number[] = [];
    for (let i = 0; i < roundTrips; i++) rtt.push(await roundTrip(100 + i));
    return summarize(rtt);
  } finally {
    socket.close();
    await db.close();
    await peer.stop();
  }
}

/**
 * Batched throughput's floor: the work the guarantees need, done in raw ws +
 * msgpackr, and nothing else. Frames of 100 envelopes (`Packr.pack(array)`, as raw), each
 * tagged as Troupe's are (`createFrameSeal`: HMAC-SHA256 over a frame counter); the peer
 * (`raw-sealed-stream`, `raw-durable-stream`) verifies the tag, decodes, checks every
 * envelope against the envelope rule (`envelopeIssue`, what Troupe's receiver runs), then
 * acknowledges.
 * - `sealed`: nothing persisted; frames go out as they are encoded, as raw's do.
 * - `durable`: the frames of one turn (`framesPerTurn`, 10: 1,000 envelopes, as the
 *   outbox's slice) are one LevelDB batch (classic-level itself, no sync) started as soon as
 *   they are encoded, and sent once it is done, in order, while the next turn encodes; the
 *   peer writes its cursor before it acknowledges, one write in flight, frames arriving
 *   meanwhile sharing the next.
 * Left out, though a transport needs them: delivery envelope by envelope, deleting what was
 * acknowledged, outbox bounds, checks of the sender's own input. So a transport keeping the
 * guarantees can come near this floor but not pass it.
 */
async function rawStreamFloor(root: string, n: number, repeats: number, durable: boolean, framesPerTurn = 10) {
  const key = randomBytes(32);
  const peerDir = join(root, durable ? 'raw-durable-stream-peer' : 'raw-sealed-stream-peer');
  await mkdir(peerDir, { recursive: true });
  const peer = await startPeer([durable ? 'raw-durable-stream' : 'raw-sealed-stream', peerDir, key.toString('hex')]);
  const db = durable ? new ClassicLevel<string, Uint8Array>(join(root, 'raw-durable-stream-local'), { keyEncoding: 'utf8', valueEncoding: 'view' }) : undefined;
  await db?.open();
  const { packr, unpackr, socket } = await rawConnection(peer.port);
  let onAck: (upTo: number) => void = () => {};
  socket.on('message', (data: Buffer) => onAck((unpackr.unpack(data) as { upTo: number }).upTo));
  let frameKey = 0;
  // Troupe's own frame seal (HMAC-SHA256 over a per-direction counter), one key both ways.
  const { seal } = createFrameSeal({ clientToServer: key, serverToClient: key }, 'client');
  try {
    const cpu = cpuMeter(peer);
    const burst = async (offset: number, timed: boolean) => {
      const envelopes = Array.from({ length: n }, (_, i) => envelope(offset + i));
      const target = offset + n;
      if (timed) await cpu.start();
      const start = performance.now();
      const acked = new Promise<void>((resolve) => (onAck = (upTo) => upTo >= target && resolve()));
      if (!db) {
        for (let i = 0; i < n; i += 100) socket.send(seal(packr.pack(envelopes.slice(i, i + 100))));
      } else {
        const ready: Array<Buffer[] | undefined> = [];
        let next = 0;
        for (let i = 0; i < n; ) {
          const group: Buffer[] = [];
          for (const end = Math.min(n, i + framesPerTurn * 100); i < end; i += 100) group.push(seal(packr.pack(envelopes.slice(i, i + 100))));
          const at = ready.push(undefined) - 1;
          void db.batch(group.map((value) => ({ type: 'put' as const, key: `out:${String(frameKey++).padStart(12, '0')}`, value }))).then(() => {
            ready[at] = group;
            while (next < ready.length && ready[next]) for (const framed of ready[next++]!) socket.send(framed);
          });
          // The next turn encodes while LevelDB writes this one, and its completion can run.
          if (i < n) await new Promise<void>((resolve) => setImmediate(resolve));
        }
      }
      await acked;
      const ms = performance.now() - start;
      if (timed) await cpu.stop();
      return ms;
    };
    const bursts: number[] = [];
    for (let i = 0; i <= repeats; i++) {
      const ms = await burst(i * n, i > 0);
      if (i > 0) bursts.push(ms); // the first is the warm-up
    }
    return { envelopesPerFrame: 100, ...(db ? { framesPerTurn } : {}), throughput: { ...burstSummary(n, bursts), cpuPerEnvelope: cpu.perEnvelope(n * repeats) } };
  } finally {
    socket.close();
    await db?.close();
    await peer.stop();
  }
}

/**
 * What one `send` costs before its frame can leave, with no storage I/O and no peer: a
 * transport on `memoryStorage`, sending to a node it has no connection to, timed from the
 * call to the durable promise. Hot: one send right after another. After an idle: each after
 * a 1 ms timer, as every step of a round trip runs (each side waits for the other). The
 * round trip's budget above its floor has to hold four such stretches of JavaScript: the
 * ping's send and receipt, the pong's send and receipt.
 */
async function sendToDurable(samples: number) {
  const transport = await createWsTransport({ nodeId: 'bench', secret: randomBytes(24).toString('hex'), storage: memoryStorage(), deliver: async () => {}, maxOutboxEntries: 2 * samples + 1_000 });
  try {
    let i = 0;
    const timed = async (pause: () => Promise<unknown>) => {
      const ms: number[] = [];
      for (let n = 0; n < samples; n++) {
        await pause();
        const e = envelope(i++, 'ping');
        const t = performance.now();
        await transport.send('nowhere', e);
        ms.push(performance.now() - t);
      }
      return ms;
    };
    const hot = await timed(() => Promise.resolve());
    const afterIdle = await timed(() => new Promise((resolve) => setTimeout(resolve, 1)));
    return { storage: 'memoryStorage', samples, hotP50Ms: round(percentile(hot, 50)), afterIdleP50Ms: round(percentile(afterIdle, 50)) };
  } finally {
    await transport.close();
  }
}

// ---- Troupe ws transport -----------------------------------------------------------------

/**
 * Troupe on both sides, and its round trips. `answer`: how the peer answers a ping
 * (bench/transport-peer.ts). `batch`: the pong's outbox entry and the ping's receipt in one
 * storage batch, as a run records what it received with what it sends (`reserve` +
 * `takeCursorOps`). `send`: the pong through `send`, after which the transport writes the
 * ping's cursor: a second write of the peer's storage, overlapping the next round trip.
 */
async function troupePair(root: string, perFrame: number, answer: 'batch' | 'send', maxOutboxEntries: number) {
  const secret = randomBytes(24).toString('hex');
  const peerDir = join(root, `peer-${perFrame}-${answer}`);
  await mkdir(peerDir, { recursive: true });
  const peer = await startPeer(['troupe', peerDir, String(perFrame), secret, answer]);
  const storage = await levelStorage({ path: join(root, `local-${perFrame}-${answer}`) });
  const waiting = new Map<string, () => void>();
  const transport = await createWsTransport({
    nodeId: 'bench',
    secret,
    storage,
    peers: { peer: `ws://127.0.0.1:${peer.port}` },
    batchMaxEnvelopes: perFrame,
    maxOutboxEntries,
    deliver: async (e) => {
      if (e.type !== 'pong') return;
      const done = waiting.get(e.payload && typeof e.payload === 'object' ? String((e.payload as { n: number }).n) : '');
      done?.();
    },
  });
  let pingId = 0;
  const roundTrip = async () => {
    const e = envelope(pingId++, 'ping');
    e.id = `ping_${pingId}`;
    const t = performance.now();
    const back = new Promise<void>((resolve) => waiting.set(String((e.payload as { n: number }).n), resolve));
    await transport.send('peer', e);
    await back;
    waiting.delete(String((e.payload as { n: number }).n));
    return performance.now() - t;
  };
  return {
    peer,
    transport,
    /** Round trip times of `n` pings, one at a time, after 100 to warm up (and connect). */
    async roundTrips(n: number) {
      for (let i = 0; i < 100; i++) await roundTrip();
      const rtt: number[] = [];
      for (let i = 0; i < n; i++) rtt.push(await roundTrip());
      return summarize(rtt);
    },
    async close() {
      await transport.close();
      await storage.close();
      await peer.stop();
    },
  };
}

/** Round trips only, the peer answering as `answer` says (see {@link troupePair}). */
async function troupeRoundTrip(root: string, roundTrips: number, answer: 'batch' | 'send') {
  const pair = await troupePair(root, 100, answer, 2_000);
  try {
    return { answer, ...(await pair.roundTrips(roundTrips)) };
  } finally {
    await pair.close();
  }
}

async function troupeSide(root: string, throughputN: number, roundTrips: number, perFrame: number, repeats: number) {
  // The throughput run sends all of its envelopes at once: room for every one of them.
  const { peer, transport, ...pair } = await troupePair(root, perFrame, 'batch', Math.max(throughputN, 2_000) + 1_000);
  try {
    const roundTrip = await pair.roundTrips(roundTrips);
    let sent = 0;
    const cpu = cpuMeter(peer);
    const throughput = async (n: number, timed: boolean) => {
      const envelopes = Array.from({ length: n }, () => {
        const e = envelope(sent);
        e.id = `bulk_${sent++}`;
        return e;
      });
      if (timed) await cpu.start();
      const start = performance.now();
      await Promise.all(envelopes.map((e) => transport.send('peer', e)));
      const persisted = performance.now() - start;
      await transport.flushed('peer');
      const ms = performance.now() - start;
      if (timed) await cpu.stop();
      return { ms, persistedMs: persisted };
    };
    const bursts: Array<{ ms: number; persistedMs: number }> = [];
    for (let i = 0; i <= repeats; i++) {
      const t = await throughput(throughputN, i > 0);
      if (i > 0) bursts.push(t); // the first is the warm-up
    }
    const cpuPerEnvelope = cpu.perEnvelope(throughputN * repeats);
    const summary = burstSummary(throughputN, bursts.map((b) => b.ms));
    const mid = bursts.find((b) => round(b.ms) === summary.medianMs)!;
    return {
      envelopesPerFrame: perFrame,
      throughput: { ...summary, medianBurstAllPersistedLocallyMs: round(mid.persistedMs), cpuPerEnvelope },
      roundTrip: { answer: 'batch', ...roundTrip },
      stats: (({ framesOut, framesIn, delivered, duplicates, reconnects }) => ({ framesOut, framesIn, delivered, duplicates, reconnects }))(transport.stats()),
    };
  } finally {
    await pair.close();
  }
}

/**
 * Bursts of `envelopes` after a warm-up burst of the same size, timed one by one: the
 * median's rate, and every burst's. One burst after a small warm-up measured mostly how far
 * the JIT and the heap had come (a transport's first bursts of 20,000 ran at half the rate
 * of its later ones), and swung with one slow moment of a shared VM.
 */
function burstSummary(envelopes: number, ms: readonly number[]) {
  const median = percentile(ms, 50);
  return {
    envelopes,
    bursts: ms.length,
    medianMs: round(median),
    msgPerSec: Math.round((envelopes / median) * 1000),
    burstsMsgPerSec: ms.map((t) => Math.round((envelopes / t) * 1000)),
  };
}

/**
 * CPU time of both processes inside the timed bursts, per envelope (user + system, every
 * thread: storage, GC, sockets), summed over the bursts `start`…`stop` brackets. On a
 * machine of `cores` cores no schedule of this work moves more than `cores × 10⁶ / total`
 * envelopes a second (`cpuBoundMsgPerSec`, next to what the row reached): a row near its
 * bound is working, one far below it is waiting. And a target rate `r` asks for
 * `total ≤ cores × 10⁶ / r` µs an envelope.
 */
function cpuMeter(peer: Peer) {
  let senderUs = 0;
  let receiverUs = 0;
  let since: { sender: NodeJS.CpuUsage; receiver: number } | undefined;
  return {
    async start() {
      since = { sender: process.cpuUsage(), receiver: await peer.cpuUs() };
    },
    async stop() {
      const used = process.cpuUsage(since!.sender);
      senderUs += used.user + used.system;
      receiverUs += (await peer.cpuUs()) - since!.receiver;
    },
    perEnvelope(envelopes: number) {
      const total = (senderUs + receiverUs) / envelopes;
      return { senderUs: round(senderUs / envelopes), receiverUs: round(receiverUs / envelopes), totalUs: round(total), cpuBoundMsgPerSec: Math.round((availableParallelism() * 1e6) / total) };
    },
  };
}

/** Sizes of {@link benchTransport}. */
export interface TransportOptions {
  batched?: number;
  onePerFrame?: number;
  troupeBatched?: number;
  troupeOnePerFrame?: number;
  roundTrips?: number;
  /** Timed bursts of each throughput row, after one warm-up burst; the median is reported. */
  repeats?: number;
}

/** Troupe ws transport vs raw ws + msgpackr, batched and one per frame; one JSON-ready object. */
export async function benchTransport(options: TransportOptions = {}) {
  const o = { batched: 200_000, onePerFrame: 50_000, troupeBatched: 20_000, troupeOnePerFrame: 5_000, roundTrips: 1_000, repeats: 5, ...options };
  const root = await tempDir('transport');
  try {
    const rawBatched = await rawSide(o.batched, o.roundTrips, 100, o.repeats);
    const rawSingle = await rawSide(o.onePerFrame, o.roundTrips, 1, o.repeats);
    const troupeBatched = await troupeSide(root, o.troupeBatched, o.roundTrips, 100, o.repeats);
    const troupeSingle = await troupeSide(root, o.troupeOnePerFrame, o.roundTrips, 1, o.repeats);
    const troupeAnsweredBySend = await troupeRoundTrip(root, o.roundTrips, 'send');
    const durableFloor = await rawDurableRoundTrip(root, o.roundTrips);
    const sealedStream = await rawStreamFloor(root, o.batched, o.repeats, false);
    const durableStream = await rawStreamFloor(root, o.batched, o.repeats, true);
    const oneSend = await sendToDurable(o.roundTrips);
    return {
      what: 'parent process ↔ child process over 127.0.0.1; ~200 B envelopes; Troupe on LevelDB at both ends (durable outbox, in-order delivery, acks)',
      envelopeBytes: encodeEnvelope(envelope(123_456)).byteLength,
      baselines: { rawWsMsgpackr: { batched100: rawBatched, onePerFrame: rawSingle }, rawWsMsgpackrDurableRoundTrip: durableFloor, rawWsMsgpackrSealedStream: sealedStream, rawWsMsgpackrDurableStream: durableStream },
      troupe: { batched100: troupeBatched, onePerFrame: troupeSingle, roundTripAnsweredBySend: troupeAnsweredBySend, sendToDurable: oneSend },
      ratios: {
        /** Raw msg/s over Troupe msg/s (higher = Troupe slower). */
        batched100RawOverTroupe: round(rawBatched.throughput.msgPerSec / troupeBatched.throughput.msgPerSec),
        onePerFrameRawOverTroupe: round(rawSingle.throughput.msgPerSec / troupeSingle.throughput.msgPerSec),
        /** Troupe p50 round trip over raw p50. */
        roundTripP50TroupeOverRaw: round(troupeBatched.roundTrip.p50Ms / rawBatched.roundTrip.p50Ms),
        roundTripP99TroupeOverRaw: round(troupeBatched.roundTrip.p99Ms / rawBatched.roundTrip.p99Ms),
        /** The same with the peer answering through `send` (two writes of its storage per ping, see {@link troupePair}). */
        roundTripP50AnsweredBySendOverRaw: round(troupeAnsweredBySend.p50Ms / rawBatched.roundTrip.p50Ms),
        /** The floor of a round trip durable on both sides (raw + two LevelDB writes) over raw, p50: the least any durable transport can reach here. */
        roundTripP50DurableFloorOverRaw: round(durableFloor.p50Ms / rawBatched.roundTrip.p50Ms),
        /** Batched floors over raw msg/s (higher = the floor slower): frames tagged and every envelope checked; and also durable at both ends. */
        batched100RawOverSealedFloor: round(rawBatched.throughput.msgPerSec / sealedStream.throughput.msgPerSec),
        batched100RawOverDurableFloor: round(rawBatched.throughput.msgPerSec / durableStream.throughput.msgPerSec),
        /** Troupe batched msg/s over the durable floor's: how near the floor Troupe comes (1 = at it). */
        batched100TroupeOverDurableFloor: round(troupeBatched.throughput.msgPerSec / durableStream.throughput.msgPerSec),
        /** CPU time an envelope costs both processes, over raw's and over the durable floor's. */
        batched100CpuTroupeOverRaw: round(troupeBatched.throughput.cpuPerEnvelope.totalUs / rawBatched.throughput.cpuPerEnvelope.totalUs),
        batched100CpuTroupeOverDurableFloor: round(troupeBatched.throughput.cpuPerEnvelope.totalUs / durableStream.throughput.cpuPerEnvelope.totalUs),
        /** The most CPU time (µs, both processes) an envelope may cost for 0.5x raw's rate on this machine's cores, at best. */
        batched100TargetCpuBudgetUs: round((availableParallelism() * 1e6) / (0.5 * rawBatched.throughput.msgPerSec)),
      },
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** Smaller sizes for `--quick`. */
export const quickTransport: TransportOptions = { batched: 20_000, onePerFrame: 5_000, troupeBatched: 2_000, troupeOnePerFrame: 500, roundTrips: 200, repeats: 2 };

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const quick = process.argv.includes('--quick');
  // `--burst N`: the batched Troupe burst sends N envelopes (default 20,000): longer bursts
  // are less at the mercy of one slow moment of a shared VM.
  const at = process.argv.indexOf('--burst');
  const burst = at === -1 ? undefined : Number(process.argv[at + 1]);
  if (burst !== undefined && !(Number.isInteger(burst) && burst > 0)) throw new TypeError(`--burst takes a positive integer, not ${process.argv[at + 1]}`);
  const transport = await benchTransport({ ...(quick ? quickTransport : {}), ...(burst ? { troupeBatched: burst } : {}) });
  console.log(JSON.stringify({ machine: await machineInfo(), transport }, null, 2));
}
