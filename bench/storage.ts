/**
 * What one LevelDB node sustains with many runs at once, and how fast a journal reads back,
 * next to raw LevelDB baselines measured in the same process:
 *
 * - group commit: `runs` runs of a one-agent crew ({@link stepCrew}, `steps` model steps
 *   each, every one calling a trivial tool) executed on one node `parallel` at a time
 *   (1, 10, 50): checkpoints/s and agent steps/s over the whole batch of runs. Every run
 *   writes its own batches; LevelDB merges concurrent writers into one log write (its writer
 *   queue), which is what `sync: true` profits from. Baseline: `parallel` raw writers, each
 *   writing batches of the mean size Troupe's checkpoints had at that level.
 * - journal replay: `createRunStore(storage).journal(runId)` (iterate + msgpack decode) over
 *   every run's journal; baseline: iterating the same keys without decoding.
 *
 *   npx tsx bench/storage.ts [--quick]
 *
 * Prints one JSON object. Not a test: nothing is asserted.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createNode, scriptedModel, type RunEvent, type Storage } from '../index.js';
import { createRunStore } from '../core/run-store.js';
import { prefixRange } from '../core/storage.js';
import { levelStorage } from '../storage/level.js';
import { countingStorage, machineInfo, round, stepCrew, tempDir } from './durable-step.js';

/** Runs `task(i)` for i in [0, count) with at most `parallel` in flight. */
async function pool(count: number, parallel: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(parallel, count) }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

/** `runs` step-crew runs on one fresh LevelDB node, `parallel` at a time. */
async function troupeLevel(dir: string, o: { runs: number; parallel: number; steps: number; sync: boolean }) {
  const { def, script } = stepCrew('group', o.steps);
  const level = await levelStorage({ path: dir });
  const { storage, stats } = countingStorage(level);
  const node = await createNode({ storage, models: { scripted: scriptedModel({ script, latencyMs: 0 }) }, crews: [def], sync: o.sync, resume: false });
  let checkpoints = 0;
  let steps = 0;
  const unsubscribe = node.subscribe((event: RunEvent) => {
    if (event.type === 'checkpoint') checkpoints += 1;
    else if (event.type === 'model.call') steps += 1;
  });
  const runIds: string[] = [];
  try {
    const start = performance.now();
    await pool(o.runs, o.parallel, async (i) => {
      const runId = `g${o.parallel}-${i}`;
      runIds.push(runId);
      const run = await node.run(def, { input: 'go', runId });
      const result = await run.result();
      if (result.status !== 'completed') throw new Error(`group-commit run ${runId} ended ${result.status}`);
    });
    const ms = performance.now() - start;
    return {
      parallel: o.parallel,
      runs: o.runs,
      agentSteps: steps,
      checkpoints,
      ms: round(ms),
      checkpointsPerSec: Math.round((checkpoints / ms) * 1000),
      agentStepsPerSec: Math.round((steps / ms) * 1000),
      batches: stats.batches,
      meanBatchOps: round(stats.ops / stats.batches),
      meanBatchKB: round(stats.bytes / stats.batches / 1024),
      totalOps: stats.ops,
      totalKB: round(stats.bytes / 1024),
      runIds,
    };
  } finally {
    unsubscribe();
    await node.close();
    await level.close();
  }
}

/**
 * Raw LevelDB: `writes` batches of `ops` puts totalling `bytes` each, shared out among
 * `parallel` writers that each wait for their previous batch (as a run waits for its
 * checkpoint).
 */
async function rawLevel(dir: string, o: { parallel: number; writes: number; ops: number; bytes: number; sync: boolean }) {
  const storage = await levelStorage({ path: dir });
  const valueBytes = Math.max(1, Math.round(o.bytes / o.ops));
  const value = new Uint8Array(valueBytes);
  for (let i = 0; i < value.length; i++) value[i] = (i * 131 + 7) & 0xff;
  try {
    let n = 0;
    const start = performance.now();
    await pool(o.parallel, o.parallel, async (w) => {
      while (n < o.writes) {
        const b = n++;
        const ops = Array.from({ length: o.ops }, (_, k) => ({ type: 'put' as const, key: `w${w}:${String(b).padStart(8, '0')}:${k}`, value }));
        await storage.write(ops, { sync: o.sync });
      }
    });
    const ms = performance.now() - start;
    return { parallel: o.parallel, writes: o.writes, opsPerWrite: o.ops, KBPerWrite: round((o.ops * valueBytes) / 1024), ms: round(ms), writesPerSec: Math.round((o.writes / ms) * 1000) };
  } finally {
    await storage.close();
  }
}

/** Reads every journal back, `passes` times; records/s decoded vs raw iteration. */
async function replay(storage: Storage, runIds: readonly string[], passes: number) {
  const store = createRunStore(storage);
  const decodedMs: number[] = [];
  const rawMs: number[] = [];
  let records = 0;
  let bytes = 0;
  for (let p = 0; p < passes; p++) {
    let t = performance.now();
    let n = 0;
    for (const id of runIds) n += (await store.journal(id)).length;
    decodedMs.push(performance.now() - t);
    records = n;
    t = performance.now();
    let raw = 0;
    let size = 0;
    for (const id of runIds) {
      for await (const [, value] of storage.entries(prefixRange(`jrnl:${id}:`))) {
        raw += 1;
        size += value.byteLength;
      }
    }
    rawMs.push(performance.now() - t);
    if (raw !== n) throw new Error(`journal replay read ${n} records, raw iteration ${raw}`);
    bytes = size;
  }
  const best = (ms: number[]) => Math.min(...ms);
  const decodedPerSec = Math.round((records / best(decodedMs)) * 1000);
  const rawPerSec = Math.round((records / best(rawMs)) * 1000);
  return {
    runs: runIds.length,
    records,
    meanRecordBytes: round(bytes / records),
    passes,
    journal: { what: 'createRunStore(storage).journal(runId): iterate + decode', ms: round(best(decodedMs)), recordsPerSec: decodedPerSec },
    baseline: { what: 'storage.entries over the same keys, no decode', ms: round(best(rawMs)), recordsPerSec: rawPerSec },
    rawOverJournal: round(rawPerSec / decodedPerSec),
  };
}

/** Sizes of {@link benchStorage}. */
export interface StorageBenchOptions {
  levels?: readonly number[];
  runs?: number;
  steps?: number;
  runsSync?: number;
  stepsSync?: number;
  replayPasses?: number;
}

/** Group commit at several levels of parallelism (sync off and on) and journal replay. */
export async function benchStorage(options: StorageBenchOptions = {}) {
  const o = { levels: [1, 10, 50], runs: 50, steps: 20, runsSync: 50, stepsSync: 10, replayPasses: 3, ...options };
  const root = await tempDir('storage');
  try {
    // An unmeasured run first: JIT and module warm-up.
    await troupeLevel(join(root, 'warm'), { runs: 5, parallel: 5, steps: 5, sync: false });
    const section = async (sync: boolean, runs: number, steps: number) => {
      const out: Record<string, unknown> = {};
      let lastRunIds: string[] = [];
      let lastDir = '';
      for (const parallel of o.levels) {
        const dir = join(root, `troupe-${sync}-${parallel}`);
        const { runIds, ...troupe } = await troupeLevel(dir, { runs, parallel, steps, sync });
        // Baseline 1: the very LevelDB writes the node made (same count, ops and bytes), from one writer.
        const sameWrites = await rawLevel(join(root, `raw-same-${sync}-${parallel}`), {
          parallel: 1,
          writes: troupe.batches,
          ops: Math.max(1, Math.round(troupe.totalOps / troupe.batches)),
          bytes: (troupe.totalKB * 1024) / troupe.batches,
          sync,
        });
        // Baseline 2: one raw write per checkpoint (checkpoint-sized), `parallel` writers, no grouping.
        const perCheckpoint = await rawLevel(join(root, `raw-ckpt-${sync}-${parallel}`), {
          parallel,
          writes: troupe.checkpoints,
          ops: Math.max(1, Math.round(troupe.totalOps / troupe.checkpoints)),
          bytes: (troupe.totalKB * 1024) / troupe.checkpoints,
          sync,
        });
        out[`parallel${parallel}`] = {
          troupe,
          baselines: { sameWritesOneWriter: sameWrites, oneWritePerCheckpoint: perCheckpoint },
          ratios: {
            /** Share of Troupe's wall time that its LevelDB writes alone take. */
            storageShareOfTroupeTime: round(sameWrites.ms / troupe.ms),
            /** Raw checkpoint-sized writes/s at this parallelism over Troupe checkpoints/s. */
            rawWritesOverCheckpoints: round(perCheckpoint.writesPerSec / troupe.checkpointsPerSec),
          },
        };
        lastRunIds = runIds;
        lastDir = dir;
      }
      return { out, lastRunIds, lastDir };
    };
    const noSync = await section(false, o.runs, o.steps);
    const withSync = await section(true, o.runsSync, o.stepsSync);
    const storage = await levelStorage({ path: noSync.lastDir });
    let journalReplay;
    try {
      journalReplay = await replay(storage, noSync.lastRunIds, o.replayPasses);
    } finally {
      await storage.close();
    }
    const speedup = (s: Record<string, unknown>) => {
      const rate = (k: string) => (s[k] as { troupe: { checkpointsPerSec: number } } | undefined)?.troupe.checkpointsPerSec ?? Number.NaN;
      const first = rate(`parallel${o.levels[0]}`);
      return Object.fromEntries(o.levels.map((l) => [`parallel${l}`, round(rate(`parallel${l}`) / first)]));
    };
    return {
      what: 'runs of a one-agent crew (model step + read tool per step) on one LevelDB node, N at a time',
      syncFalse: { runs: o.runs, stepsPerRun: o.steps, ...noSync.out, checkpointsSpeedupOverParallel1: speedup(noSync.out) },
      syncTrue: { runs: o.runsSync, stepsPerRun: o.stepsSync, ...withSync.out, checkpointsSpeedupOverParallel1: speedup(withSync.out) },
      journalReplay,
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** Smaller sizes for `--quick`. */
export const quickStorage: StorageBenchOptions = { levels: [1, 10], runs: 10, steps: 5, runsSync: 10, stepsSync: 3, replayPasses: 1 };

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const quick = process.argv.includes('--quick');
  const groupCommit = await benchStorage(quick ? quickStorage : {});
  console.log(JSON.stringify({ machine: await machineInfo(), groupCommit }, null, 2));
}
