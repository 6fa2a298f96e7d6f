/**
 * Kernel messaging between two actors of one run, next to raw XState measured in the same
 * process:
 *
 * - raw XState: two actors invoked by a root, bouncing events with `sendTo(system.get(...))`
 *   (synchronous hand-off inside XState's mailboxes), and the same with each hop deferred by
 *   `queueMicrotask` (the cheapest asynchronous hop, which is how the node delivers);
 * - Troupe: a tiny {@link RunnableDefinition} whose root invokes the same two players; they
 *   bounce envelopes with `ActorRuntime.post`. Every envelope is stamped, journaled, put in
 *   the target's durable mailbox and checkpointed with the macrostep that sent it, on
 *   `memoryStorage` and on `levelStorage` (sync off). The clock stops when the run's final
 *   checkpoint is durable, so every counted envelope is on disk.
 * - `node.tell` from outside into the run: each call resolves once the envelope is durable.
 *
 * `window` is how many balls are in flight at once: 1 is strict ping-pong (one checkpoint
 * per hop); larger windows let the node put many hops in one checkpoint.
 *
 *   npx tsx bench/messaging.ts [--quick]
 *
 * Prints one JSON object. Not a test: nothing is asserted.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { assign, createActor, enqueueActions, setup, type AnyStateMachine } from 'xstate';
import { createNode, memoryStorage, type ActorRuntime, type Envelope, type RunnableDefinition, type Storage } from '../index.js';
import { levelStorage } from '../storage/level.js';
import { machineInfo, round, tempDir } from './durable-step.js';

/** ~200 B of payload, so an envelope is about the size the transport benchmark uses. */
const PAD = 'x'.repeat(160);

interface Counts {
  delivered: number;
}

/** One hop count per delivered ball, shared by both players of one game. */
function counter(): Counts {
  return { delivered: 0 };
}

// ---- raw XState -------------------------------------------------------------------------

type Ball = { type: 'ball'; n: number; pad: string };

/**
 * A root with two children, `ping` and `pong`, that bounce `window` balls until `ping` has
 * received `half` of them. `pong` serves: it is invoked second, so `ping` is already in the
 * system (a `sendTo` whose target is missing would go to the sender itself). `defer` routes
 * every hop through `queueMicrotask`.
 */
function rawGame(half: number, window: number, counts: Counts, defer: boolean): AnyStateMachine {
  const player = (self: 'ping' | 'pong', other: 'ping' | 'pong', serve: number, quota: number) =>
    setup({
      types: {} as { context: { received: number }; events: Ball },
      actions: {
        serve: enqueueActions(({ system, enqueue }) => {
          for (let n = 0; n < serve; n++) enqueue.sendTo(system.get(other), { type: 'ball', n, pad: PAD } as Ball);
        }),
        // Once `ping` is done it leaves the system; `pong` then stops bouncing.
        bounce: defer
          ? ({ event, system }) => {
              const target = system.get(other);
              if (target) queueMicrotask(() => target.send({ type: 'ball', n: event.n + 1, pad: event.pad }));
            }
          : enqueueActions(({ event, system, enqueue }) => {
              const target = system.get(other);
              if (target) enqueue.sendTo(target, { type: 'ball', n: event.n + 1, pad: event.pad } as Ball);
            }),
      },
      guards: { finished: ({ context }) => context.received >= quota },
    }).createMachine({
      id: self,
      context: { received: 0 },
      entry: 'serve',
      initial: 'playing',
      states: {
        playing: {
          always: { guard: 'finished', target: 'over' },
          on: {
            ball: {
              actions: [
                assign({ received: ({ context }) => context.received + 1 }),
                () => {
                  counts.delivered += 1;
                },
                'bounce',
              ],
            },
          },
        },
        over: { type: 'final' },
      },
    });
  return setup({
    actors: { ping: player('ping', 'pong', 0, half), pong: player('pong', 'ping', window, Number.POSITIVE_INFINITY) },
  }).createMachine({
    id: 'raw-game',
    initial: 'playing',
    states: {
      playing: {
        invoke: [
          { id: 'ping', systemId: 'ping', src: 'ping', onDone: 'over' },
          { id: 'pong', systemId: 'pong', src: 'pong' },
        ],
      },
      over: { type: 'final' },
    },
  });
}

/** Plays one raw game of about `deliveries` hops; resolves when the root is done. */
export async function playRaw(deliveries: number, window: number, defer: boolean) {
  const counts = counter();
  const actor = createActor(rawGame(Math.ceil(deliveries / 2), window, counts, defer));
  const done = new Promise<void>((resolve, reject) => actor.subscribe({ complete: resolve, error: reject }));
  const start = performance.now();
  actor.start();
  await done;
  const ms = performance.now() - start;
  actor.stop();
  return { window, delivered: counts.delivered, ms: round(ms), deliveriesPerSec: Math.round((counts.delivered / ms) * 1000) };
}

// ---- Troupe -----------------------------------------------------------------------------

/**
 * A run whose root invokes `ping` and `pong` (with `systemId`, so one snapshot holds both);
 * they bounce envelopes through the runtime until `ping` received `half`. With `bounce: false`
 * the players only count what arrives (a sink for `node.tell`), and the run never ends.
 */
export function pingPongDefinition(options: { half: number; window: number; counts: Counts; bounce?: boolean }): RunnableDefinition {
  const { half, window, counts } = options;
  const bounce = options.bounce ?? true;
  type Delivered = { type: 'troupe.envelope'; envelope: Envelope };
  const player = (runtime: ActorRuntime, self: 'ping' | 'pong', other: 'ping' | 'pong', serve: number, quota: number) =>
    setup({
      types: {} as { context: { received: number }; events: Delivered },
      actions: {
        serve: () => {
          for (let n = 0; n < serve; n++) runtime.post(self, { to: other, type: 'ball', payload: { n, pad: PAD } });
        },
        bounce: ({ event }) => {
          if (!bounce) return;
          const ball = event.envelope.payload as { n: number; pad: string };
          runtime.post(self, { to: other, type: 'ball', payload: { n: ball.n + 1, pad: ball.pad } });
        },
      },
      guards: { finished: ({ context }) => context.received >= quota },
    }).createMachine({
      id: self,
      context: { received: 0 },
      entry: 'serve',
      initial: 'playing',
      states: {
        playing: {
          always: { guard: 'finished', target: 'over' },
          on: {
            'troupe.envelope': {
              actions: [
                assign({ received: ({ context }) => context.received + 1 }),
                () => {
                  counts.delivered += 1;
                },
                'bounce',
              ],
            },
          },
        },
        over: { type: 'final' },
      },
    });
  return {
    id: 'pingpong',
    version: '1',
    actorIds: ['ping', 'pong'],
    createMachine: (runtime) =>
      setup({
        actors: {
          ping: player(runtime, 'ping', 'pong', bounce ? window : 0, bounce ? half : Number.POSITIVE_INFINITY),
          pong: player(runtime, 'pong', 'ping', 0, Number.POSITIVE_INFINITY),
        },
      }).createMachine({
        id: 'pingpong',
        initial: 'playing',
        states: {
          playing: {
            invoke: [
              { id: 'ping', systemId: 'ping', src: 'ping', onDone: 'over' },
              { id: 'pong', systemId: 'pong', src: 'pong' },
            ],
          },
          over: { type: 'final' },
        },
        output: () => ({ status: 'completed' as const, output: '', error: null }),
      }),
  };
}

type StorageKind = 'memory' | 'level';

async function openStorage(kind: StorageKind, dir: string): Promise<Storage> {
  return kind === 'memory' ? memoryStorage() : levelStorage({ path: dir });
}

/** One Troupe game of about `deliveries` hops; timed until the run's last checkpoint is durable. */
export async function playTroupe(kind: StorageKind, dir: string, deliveries: number, window: number) {
  const storage = await openStorage(kind, dir);
  const node = await createNode({ storage, resume: false });
  let checkpoints = 0;
  const unsubscribe = node.subscribe((event) => {
    if (event.type === 'checkpoint') checkpoints += 1;
  });
  try {
    const counts = counter();
    const def = pingPongDefinition({ half: Math.ceil(deliveries / 2), window, counts });
    const start = performance.now();
    const run = await node.run(def, { input: 'serve', runId: `pingpong-${kind}-${window}` });
    const result = await run.result();
    const ms = performance.now() - start;
    if (result.status !== 'completed') throw new Error(`ping-pong run ended ${result.status}`);
    return {
      storage: kind,
      window,
      delivered: counts.delivered,
      checkpoints,
      deliveriesPerCheckpoint: round(counts.delivered / checkpoints),
      ms: round(ms),
      deliveriesPerSec: Math.round((counts.delivered / ms) * 1000),
      usPerDelivery: round((ms * 1000) / counts.delivered),
    };
  } finally {
    unsubscribe();
    await node.close();
    await storage.close();
  }
}

/**
 * `node.tell` into a running run: `inFlight` tells outstanding at once, each resolving once
 * its envelope is durably in the target's mailbox; timed until the last one resolves.
 */
export async function tellTroupe(kind: StorageKind, dir: string, tells: number, inFlight: number) {
  const storage = await openStorage(kind, dir);
  const node = await createNode({ storage, resume: false });
  try {
    const counts = counter();
    const def = pingPongDefinition({ half: 0, window: 0, counts, bounce: false });
    const runId = `tell-${kind}-${inFlight}`;
    const run = await node.run(def, { input: 'sink', runId });
    let sent = 0;
    const payload = { n: 0, pad: PAD };
    const start = performance.now();
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (sent < tells) {
          sent += 1;
          await node.tell(`${runId}/pong`, 'ball', payload);
        }
      }),
    );
    const ms = performance.now() - start;
    await run.stop();
    return { storage: kind, inFlight, tells, delivered: counts.delivered, ms: round(ms), tellsPerSec: Math.round((tells / ms) * 1000) };
  } finally {
    await node.close();
    await storage.close();
  }
}

/**
 * Runs `trial` `trials` times and keeps the run with the median `key`: this machine's
 * throughput swings by 2x between back-to-back runs (JIT, GC of the previous section).
 */
async function median<T extends Record<K, number>, K extends string>(trials: number, key: K, trial: (i: number) => Promise<T>) {
  const runs: T[] = [];
  for (let i = 0; i < trials; i++) runs.push(await trial(i));
  const sorted = [...runs].sort((a, b) => a[key] - b[key]);
  return { ...sorted[Math.floor(sorted.length / 2)]!, trials, [`${key}All`]: runs.map((r) => r[key]) };
}

/** Sizes of {@link benchMessaging}. */
export interface MessagingOptions {
  rawDeliveries?: number;
  troupeDeliveries?: number;
  tells?: number;
  windows?: readonly number[];
  trials?: number;
}

/** Troupe ping-pong and `node.tell` next to raw XState ping-pong; one JSON-ready object. */
export async function benchMessaging(options: MessagingOptions = {}) {
  const o = { rawDeliveries: 100_000, troupeDeliveries: 5_000, tells: 2_000, windows: [1, 64], trials: 3, ...options };
  const root = await tempDir('msg');
  try {
    // Warm-up rounds (discarded): JIT, module init, LevelDB's first open.
    await playRaw(5_000, 1, false);
    await playRaw(5_000, 1, true);
    await playTroupe('memory', join(root, 'warm-m'), 1_000, 1);
    await playTroupe('level', join(root, 'warm-l'), 1_000, 1);

    type Raw = Awaited<ReturnType<typeof median<Awaited<ReturnType<typeof playRaw>>, 'deliveriesPerSec'>>>;
    type Kernel = Awaited<ReturnType<typeof median<Awaited<ReturnType<typeof playTroupe>>, 'deliveriesPerSec'>>>;
    const rawSync: Record<string, Raw> = {};
    const rawMicrotask: Record<string, Raw> = {};
    const troupeMemory: Record<string, Kernel> = {};
    const troupeLevel: Record<string, Kernel> = {};
    for (const w of o.windows) {
      const key = `window${w}`;
      rawSync[key] = await median(o.trials, 'deliveriesPerSec', () => playRaw(o.rawDeliveries, w, false));
      rawMicrotask[key] = await median(o.trials, 'deliveriesPerSec', () => playRaw(o.rawDeliveries, w, true));
      troupeMemory[key] = await median(o.trials, 'deliveriesPerSec', (i) => playTroupe('memory', join(root, `m-${w}-${i}`), o.troupeDeliveries, w));
      troupeLevel[key] = await median(o.trials, 'deliveriesPerSec', (i) => playTroupe('level', join(root, `l-${w}-${i}`), o.troupeDeliveries, w));
    }
    const tell = async (kind: StorageKind, inFlight: number) => median(o.trials, 'tellsPerSec', (i) => tellTroupe(kind, join(root, `t-${kind}-${inFlight}-${i}`), o.tells, inFlight));
    const nodeTell = {
      memory: { sequential: await tell('memory', 1), inFlight64: await tell('memory', 64) },
      level: { sequential: await tell('level', 1), inFlight64: await tell('level', 64) },
    };
    const ratios: Record<string, Record<string, number>> = {};
    for (const w of o.windows) {
      const key = `window${w}`;
      const raw = rawSync[key]!.deliveriesPerSec;
      const micro = rawMicrotask[key]!.deliveriesPerSec;
      ratios[key] = {
        // How many times more hops/s raw XState makes than durable envelopes (higher = Troupe slower).
        rawSendToOverTroupeMemory: round(raw / troupeMemory[key]!.deliveriesPerSec),
        rawSendToOverTroupeLevel: round(raw / troupeLevel[key]!.deliveriesPerSec),
        rawMicrotaskOverTroupeMemory: round(micro / troupeMemory[key]!.deliveriesPerSec),
        rawMicrotaskOverTroupeLevel: round(micro / troupeLevel[key]!.deliveriesPerSec),
      };
    }
    return {
      what: 'two actors of one run bouncing ~200 B envelopes; window = balls in flight; median of trials',
      baselines: { rawXStateSendTo: rawSync, rawXStateMicrotaskHop: rawMicrotask },
      troupe: { memoryStorage: troupeMemory, levelStorage: troupeLevel },
      nodeTell,
      ratios,
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** Smaller sizes for `--quick`. */
export const quickMessaging: MessagingOptions = { rawDeliveries: 20_000, troupeDeliveries: 1_000, tells: 300, trials: 1 };

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const quick = process.argv.includes('--quick');
  const messaging = await benchMessaging(quick ? quickMessaging : {});
  console.log(JSON.stringify({ machine: await machineInfo(), messaging }, null, 2));
}
