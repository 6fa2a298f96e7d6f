/**
 * A peer that is down for `--seconds` (default 30) while a node keeps telling it things:
 * what the node holds for it (outbox entries and bytes, database size, heap), what `tell`
 * answers once the bound is reached (`OUTBOX_FULL`, or a wait with `--wait-ms`), and, when
 * the peer comes back, how long the backlog takes to drain and whether every envelope the
 * node accepted arrived exactly once, in order.
 *
 * The node is a real `createNode` on LevelDB with the ws transport; `tell` goes to a run part
 * on the peer (`x1/_part.b`), the way a crew's mail for a placed actor goes; the peer is a ws
 * transport in the same process (on LevelDB too) that starts listening when the outage ends.
 *
 *   node --conditions=troupe-source --import tsx bench/outage.ts [--seconds 30] [--rate 200] [--outbox-max 2000] [--wait-ms 0]
 *
 * Prints one JSON object. Not a test: nothing is asserted.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Command } from 'commander';
import { createNode } from '../core/node.js';
import { isTroupeError } from '../core/errors.js';
import type { Envelope } from '../core/envelope.js';
import { levelStorage } from '../storage/level.js';
import { memoryStorage } from '../storage/memory.js';
import { createWsTransport, wsTransport } from '../transports/ws.js';
import { machineInfo, round, tempDir } from './durable-step.js';

const opts = new Command()
  .option('--seconds <n>', 'how long the peer is down', Number, 30)
  .option('--rate <n>', 'tells per second while it is down', Number, 200)
  .option('--outbox-max <n>', 'the bound of the outbox for the peer (maxOutboxEntries)', Number, 2_000)
  .option('--wait-ms <n>', 'how long a tell waits for room (outboxWaitMs)', Number, 0)
  .parse()
  .opts<{ seconds: number; rate: number; outboxMax: number; waitMs: number }>();

const SECRET = 'outage-bench-secret-0123456789';

async function dirBytes(dir: string): Promise<number> {
  let bytes = 0;
  for (const name of await readdir(dir)) bytes += (await stat(join(dir, name))).size;
  return bytes;
}

async function main() {
  const root = await tempDir('outage');
  const dbA = join(root, 'a');
  // A port that was just listened on and is free again: the peer is down.
  const probe = await createWsTransport({ nodeId: 'b', storage: memoryStorage(), secret: SECRET, deliver: async () => {}, listen: { host: '127.0.0.1', port: 0 } });
  const { port, url } = probe.address!;
  await probe.close();

  const storage = await levelStorage({ path: dbA });
  const factory = wsTransport({ secret: SECRET, peers: { b: url }, maxOutboxEntries: opts.outboxMax, outboxWaitMs: opts.waitMs, reconnectMinMs: 50, reconnectMaxMs: 500 });
  const node = await createNode({ nodeId: 'a', storage, transport: factory });
  const transport = await factory.created;

  const accepted: number[] = [];
  let full = 0;
  let otherErrors = 0;
  let n = 0;
  const samples: Array<{ s: number; outboxEntries: number; heapMiB: number; dbKiB: number; full: number }> = [];
  const t0 = performance.now();
  const heap0 = process.memoryUsage().heapUsed;
  let heapMax = heap0;
  const pending: Promise<void>[] = [];
  // One tell every 1/rate s, on a timer: a steady producer that does not wait for the outbox.
  await new Promise<void>((resolve) => {
    const interval = 1000 / opts.rate;
    let next = performance.now();
    let lastSample = 0;
    const tick = () => {
      const now = performance.now();
      while (next <= now) {
        const i = ++n;
        pending.push(
          node.tell('x1/_part.b', 'note', { i }).then(
            () => void accepted.push(i),
            (error: unknown) => void (isTroupeError(error, 'OUTBOX_FULL') ? full++ : otherErrors++),
          ),
        );
        next += interval;
      }
      heapMax = Math.max(heapMax, process.memoryUsage().heapUsed);
      const s = Math.floor((now - t0) / 1000);
      if (s > lastSample) {
        lastSample = s;
        void dirBytes(dbA).then((bytes) => samples.push({ s, outboxEntries: transport.peers().find((p) => p.nodeId === 'b')?.unacked ?? 0, heapMiB: round(process.memoryUsage().heapUsed / 2 ** 20), dbKiB: round(bytes / 1024), full }));
      }
      if (now - t0 >= opts.seconds * 1000) resolve();
      else setTimeout(tick, Math.max(0, next - performance.now()));
    };
    tick();
  });
  const downMs = performance.now() - t0;
  const heldAtEnd = transport.peers().find((p) => p.nodeId === 'b')?.unacked ?? 0;

  // The peer comes back; it records the order it receives the notes in.
  const received: number[] = [];
  const storageB = await levelStorage({ path: join(root, 'b') });
  const up = performance.now();
  const b = await createWsTransport({
    nodeId: 'b',
    storage: storageB,
    secret: SECRET,
    listen: { host: '127.0.0.1', port },
    deliver: async (envelope: Envelope) => void received.push((envelope.payload as { i: number }).i),
  });
  await Promise.allSettled(pending);
  await transport.flushed('b');
  const drainMs = performance.now() - up;
  const inOrder = received.every((v, i) => i === 0 || v > received[i - 1]!);
  const once = new Set(received).size === received.length;
  const sameAsAccepted = received.length === accepted.length && [...accepted].sort((x, y) => x - y).every((v, i) => v === received[i]);
  await node.close();
  await b.close();
  await storage.close();
  await storageB.close();
  await rm(root, { recursive: true, force: true });
  process.stdout.write(
    `${JSON.stringify(
      {
        what: 'node.tell to a run part on a peer that is down, at a steady rate, then the peer comes back',
        machine: machineInfo(),
        options: opts,
        outage: { ms: round(downMs), tells: n, accepted: accepted.length, refusedOutboxFull: full, otherErrors, outboxEntriesAtEnd: heldAtEnd, bound: opts.outboxMax, heapGrowthMiB: round((heapMax - heap0) / 2 ** 20), samples },
        recovery: { drainMs: round(drainMs), delivered: received.length, everyAcceptedOnce: once && sameAsAccepted, inOrder },
      },
      null,
      2,
    )}\n`,
  );
}

await main();
