/**
 * The cost of one durable step, next to its baselines measured in the same process:
 *
 * - raw XState: a tiny machine whose self-transition updates context, driven with `send`;
 * - raw LevelDB (`levelStorage`): one batch holding one ~1 KB put per step, sync off and on;
 * - Troupe: a one-agent crew whose agent makes N steps (N-1 model turns that each call a
 *   trivial `read` tool, then a final answer) on a scripted model with no latency. The time
 *   between consecutive `checkpoint` events, and the run's total time over its checkpoints
 *   and its agent steps, for `sync: false` and `sync: true`.
 *
 *   npx tsx bench/durable-step.ts [--quick]
 *
 * Prints one JSON object. Not a test: nothing is asserted.
 */
import { mkdtemp, rm, statfs } from 'node:fs/promises';
import { availableParallelism, cpus, platform, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { assign, createActor, setup } from 'xstate';
import { z } from 'zod';
import { agent, createNode, crew, scriptedModel, tool, type RunEvent, type Storage, type StorageOp } from '../index.js';
import { levelStorage } from '../storage/level.js';
import { layout } from '../core/layout.js';

// ---- shared helpers (also used by resume-time.ts) ---------------------------------------

/** Rounds to `digits` significant decimals, keeping integers readable. */
export function round(value: number, digits = 3): number {
  if (!Number.isFinite(value)) return value;
  const abs = Math.abs(value);
  const places = abs >= 100 ? 1 : abs >= 1 ? digits - 1 : digits + 1;
  return Number(value.toFixed(Math.min(places, 6)));
}

/** Nearest-rank percentile of an unsorted sample. */
export function percentile(sample: readonly number[], p: number): number {
  if (sample.length === 0) return Number.NaN;
  const sorted = [...sample].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

/** p50 / p99 / mean / min / max of a sample of milliseconds, rounded. */
export function summarize(ms: readonly number[]) {
  const mean = ms.reduce((a, b) => a + b, 0) / (ms.length || 1);
  return {
    n: ms.length,
    p50Ms: round(percentile(ms, 50)),
    p99Ms: round(percentile(ms, 99)),
    meanMs: round(mean),
    minMs: round(Math.min(...ms)),
    maxMs: round(Math.max(...ms)),
  };
}

/** Where temp databases go: `TROUPE_BENCH_DIR` or the OS temp dir. */
export const benchBase = process.env.TROUPE_BENCH_DIR || tmpdir();

const FS_TYPES: Record<number, string> = { 0xef53: 'ext4', 0x01021994: 'tmpfs', 0x58465342: 'xfs', 0x9123683e: 'btrfs', 0x794c7630: 'overlayfs', 0x6969: 'nfs', 0x65735546: 'fuse' };

/** What the figures were measured on (cores, CPU, memory, Node, OS, the temp dir's file system). */
export async function machineInfo() {
  let fs = 'unknown';
  try {
    const type = Number((await statfs(benchBase)).type);
    fs = FS_TYPES[type] ?? `0x${type.toString(16)}`;
  } catch {
    // statfs is not available everywhere; the figure is informative only.
  }
  return { cpus: availableParallelism(), cpuModel: cpus()[0]?.model ?? 'unknown', memGiB: round(totalmem() / 1024 ** 3), node: process.version, platform: `${platform()} ${release()}`, arch: process.arch, benchDir: { path: benchBase, fs }, code: benchCode };
}

/**
 * How this benchmark runs: `compiled` when it is the JavaScript `npm run bench` built
 * (scripts/bench.js), as a consumer of the package runs Troupe; `source` under tsx, whose
 * transform adds a helper call to every function it creates (esbuild's `keepNames`): up
 * to ~15% of the transport's burst in alternating runs.
 */
export const benchCode: 'compiled' | 'source' = import.meta.url.endsWith('.js') ? 'compiled' : 'source';

/**
 * Node arguments that run the bench module `url` (a sibling `.ts` file as written in the
 * sources) in a child process the way this process runs: the compiled `.js` beside this one,
 * or the `.ts` file through tsx.
 */
export function childScript(url: URL): string[] {
  if (benchCode === 'compiled') return [fileURLToPath(new URL(url.href.replace(/\.ts$/, '.js')))];
  return ['--import', import.meta.resolve('tsx'), fileURLToPath(url)];
}

/**
 * The path of a file of the repository (`examples/order-crew.ts`, `bin/dev.js`), from the
 * sources or from the compiled bench, which lives one level further down (.bench-build/).
 */
export function repoFile(path: string): string {
  return fileURLToPath(new URL(`${benchCode === 'compiled' ? '../../' : '../'}${path}`, import.meta.url));
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(benchBase, `troupe-bench-${prefix}-`));
}

/** Wraps a storage to count batches and the bytes they carry (keys + values). */
export function countingStorage(inner: Storage) {
  // `packBytes`: the part of `bytes` that packs log entries into segments (core/log-store.ts).
  const stats = { batches: 0, ops: 0, bytes: 0, maxBytes: 0, packBytes: 0 };
  const wrapped: Storage = Object.create(inner) as Storage;
  Object.defineProperty(wrapped, 'write', {
    value: (ops: readonly StorageOp[], options?: { sync?: boolean }) => {
      stats.batches += 1;
      stats.ops += ops.length;
      let bytes = 0;
      for (const op of ops) {
        const size = op.key.length + (op.type === 'put' ? op.value.byteLength : 0);
        bytes += size;
        if (layout.isLogSegment(op.key) || (op.type === 'del' && layout.isLogEntry(op.key))) stats.packBytes += size;
      }
      stats.bytes += bytes;
      stats.maxBytes = Math.max(stats.maxBytes, bytes);
      return inner.write(ops, options);
    },
  });
  return { storage: wrapped, stats };
}

// ---- baselines ---------------------------------------------------------------------------

/** Raw XState v5: a self-transition that updates context, per `send`. */
export function benchRawXState(events: number) {
  const machine = setup({ types: {} as { context: { n: number; last: number }; events: { type: 'tick'; value: number } } }).createMachine({
    id: 'tiny',
    context: { n: 0, last: 0 },
    on: { tick: { actions: assign(({ context, event }) => ({ n: context.n + 1, last: event.value })) } },
  });
  const actor = createActor(machine).start();
  for (let i = 0; i < Math.min(10_000, events); i++) actor.send({ type: 'tick', value: i }); // warm-up
  const start = performance.now();
  for (let i = 0; i < events; i++) actor.send({ type: 'tick', value: i });
  const ms = performance.now() - start;
  actor.stop();
  return { events, eventsPerSec: Math.round((events / ms) * 1000), usPerEvent: round((ms * 1000) / events) };
}

/** Raw classic-level through `levelStorage`: one batch with one ~1 KB put per step. */
export async function benchRawLevel(dir: string, sync: boolean, writes: number) {
  const storage = await levelStorage({ path: dir });
  const value = new Uint8Array(1024);
  for (let i = 0; i < value.length; i++) value[i] = (i * 131 + 7) & 0xff;
  try {
    for (let i = 0; i < Math.min(50, writes); i++) await storage.write([{ type: 'put', key: `warm:${i}`, value }], { sync });
    const lat: number[] = [];
    const start = performance.now();
    for (let i = 0; i < writes; i++) {
      const t = performance.now();
      await storage.write([{ type: 'put', key: `k:${String(i).padStart(8, '0')}`, value }], { sync });
      lat.push(performance.now() - t);
    }
    const ms = performance.now() - start;
    const s = summarize(lat);
    return { sync, writes, valueBytes: value.byteLength, opsPerSec: Math.round((writes / ms) * 1000), p50Ms: s.p50Ms, p99Ms: s.p99Ms, meanMs: round(ms / writes) };
  } finally {
    await storage.close();
  }
}

// ---- Troupe ------------------------------------------------------------------------------

/** A one-agent crew whose agent makes `steps` model steps (`steps - 1` of them call `noop`). */
export function stepCrew(id: string, steps: number, agentIds: readonly string[] = ['worker']) {
  const noop = tool({
    name: 'noop',
    description: 'Returns its argument.',
    input: z.object({ i: z.number() }),
    effect: 'read',
    run: ({ i }) => ({ ok: i }),
  });
  const turns = (agentId: string) => [
    ...Array.from({ length: steps - 1 }, (_, i) => ({ text: `${agentId} step ${i + 1}`, toolCalls: [{ name: 'noop', args: { i } }] })),
    `${agentId}: done after ${steps} steps`,
  ];
  const script = Object.fromEntries(agentIds.map((a) => [a, turns(a)]));
  const def = crew({
    id,
    agents: agentIds.map((a) => agent({ id: a, role: 'steps', instructions: 'Take steps.', model: 'scripted', tools: [noop], maxSteps: steps + 10 })),
  });
  return { def, script };
}

/** One run of {@link stepCrew} on a fresh LevelDB; checkpoint intervals from node events. */
export async function benchTroupeSteps(dir: string, sync: boolean, steps: number) {
  const { def, script } = stepCrew('steps', steps);
  const level = await levelStorage({ path: dir });
  const { storage, stats } = countingStorage(level);
  const node = await createNode({ storage, models: { scripted: scriptedModel({ script, latencyMs: 0 }) }, crews: [def], sync });
  const checkpointAt: number[] = [];
  let modelCalls = 0;
  let toolCalls = 0;
  const unsubscribe = node.subscribe((event: RunEvent) => {
    if (event.type === 'checkpoint') checkpointAt.push(performance.now());
    else if (event.type === 'model.call') modelCalls += 1;
    else if (event.type === 'tool.call') toolCalls += 1;
  });
  try {
    const start = performance.now();
    const run = await node.run(def, { input: 'go', runId: `steps-${sync ? 'sync' : 'nosync'}` });
    const result = await run.result();
    const totalMs = performance.now() - start;
    if (result.status !== 'completed') throw new Error(`bench run ended ${result.status}`);
    const intervals = checkpointAt.slice(1).map((t, i) => t - checkpointAt[i]!);
    const s = summarize(intervals);
    const checkpoints = checkpointAt.length;
    return {
      sync,
      agentSteps: modelCalls,
      modelCalls,
      toolCalls,
      checkpoints,
      checkpointsPerStep: round(checkpoints / modelCalls),
      totalMs: round(totalMs),
      checkpointsPerSec: Math.round((checkpoints / totalMs) * 1000),
      msPerCheckpoint: round(totalMs / checkpoints),
      checkpointIntervalP50Ms: s.p50Ms,
      checkpointIntervalP99Ms: s.p99Ms,
      msPerAgentStep: round(totalMs / modelCalls),
      batches: stats.batches,
      meanBatchOps: round(stats.ops / stats.batches),
      meanBatchKB: round(stats.bytes / stats.batches / 1024),
      maxBatchKB: round(stats.maxBytes / 1024),
    };
  } finally {
    unsubscribe();
    await node.close();
    await level.close();
  }
}

export interface DurableStepOptions {
  xstateEvents?: number;
  levelWritesNoSync?: number;
  levelWritesSync?: number;
  stepsNoSync?: number;
  stepsSync?: number;
}

export async function benchDurableStep(options: DurableStepOptions = {}) {
  const o = { xstateEvents: 200_000, levelWritesNoSync: 5_000, levelWritesSync: 300, stepsNoSync: 200, stepsSync: 100, ...options };
  const root = await tempDir('step');
  try {
    const rawXState = benchRawXState(o.xstateEvents);
    const levelNoSync = await benchRawLevel(join(root, 'level-nosync'), false, o.levelWritesNoSync);
    const levelSync = await benchRawLevel(join(root, 'level-sync'), true, o.levelWritesSync);
    // A short unmeasured run first, so the measured ones do not pay for JIT and module warm-up.
    await benchTroupeSteps(join(root, 'warmup'), false, 20);
    const troupeNoSync = await benchTroupeSteps(join(root, 'troupe-nosync'), false, o.stepsNoSync);
    const troupeSync = await benchTroupeSteps(join(root, 'troupe-sync'), true, o.stepsSync);
    const ratios = (t: typeof troupeNoSync, l: typeof levelNoSync) => ({
      /** Mean time per checkpoint over mean time per raw 1 KB batch. */
      checkpointVsRawWrite: round(t.msPerCheckpoint / l.meanMs),
      checkpointP50VsRawWriteP50: round(t.checkpointIntervalP50Ms / l.p50Ms),
      /** One agent step (model call + tool call, all its checkpoints) over one raw 1 KB batch. */
      stepVsRawWrite: round(t.msPerAgentStep / l.meanMs),
      /** One agent step over one raw XState event. */
      stepVsRawXStateEvent: Math.round((t.msPerAgentStep * 1000) / rawXState.usPerEvent),
    });
    return {
      baselines: { rawXState, rawLevel: { syncFalse: levelNoSync, syncTrue: levelSync } },
      troupe: { syncFalse: troupeNoSync, syncTrue: troupeSync },
      ratios: { syncFalse: ratios(troupeNoSync, levelNoSync), syncTrue: ratios(troupeSync, levelSync) },
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

export const quickDurableStep: DurableStepOptions = { xstateEvents: 20_000, levelWritesNoSync: 500, levelWritesSync: 30, stepsNoSync: 30, stepsSync: 15 };

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const quick = process.argv.includes('--quick');
  const durableStep = await benchDurableStep(quick ? quickDurableStep : {});
  console.log(JSON.stringify({ machine: await machineInfo(), durableStep }, null, 2));
}
