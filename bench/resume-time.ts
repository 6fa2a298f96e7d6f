/**
 * Cold-resume time of a run stopped mid-conversation, next to its baseline measured in the
 * same process (open the same LevelDB and read its latest checkpoint, nothing else).
 *
 * `crewAgents`: twenty agents in sequence, stopped while the last works: what a resume costs
 * when most of a crew's conversations are finished.
 *
 * `conversation`: a one-agent run whose conversation holds ~5,000 messages
 * (2,500 steps of {@link loopModel}), against the baseline "open the same LevelDB and read
 * one key" (the run's index record): what the persistence layout costs a resume beyond
 * opening the database. The latest-checkpoint read is reported beside it.
 *
 * A seed run is started on a fresh LevelDB and the node is closed once the run has made K
 * checkpoints (the scripted model has latency, so the run is still going); the storage is
 * closed too. Each trial then works on a fresh copy of that directory: open `levelStorage`,
 * `createNode({ storage, models, crews })` (which resumes unfinished runs), and time
 *   - until the run handle exists (`node.get(runId)`),
 *   - until the first `checkpoint` event after the resume.
 * "Cold" means a closed database and a node that has never seen the run; the process, its
 * modules and the OS page cache are warm. One unmeasured trial comes first.
 *
 *   npx tsx bench/resume-time.ts [--quick] [--conversation]
 *
 * Prints one JSON object. Not a test: nothing is asserted.
 */
import { existsSync } from 'node:fs';
import { cp, open, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createNode, scriptedModel, type CrewDefinition, type RunEvent, type Script } from '../index.js';
import { createRunStore, keys } from '../core/run-store.js';
import { levelStorage } from '../storage/level.js';
import { machineInfo, round, stepCrew, summarize, tempDir } from './durable-step.js';
import { loopCrew, loopModel } from './persistence.js';

/** Latency of the scripted model: keeps the seed run going while we stop it. */
const LATENCY_MS = 2;

interface Variant {
  name: string;
  def: CrewDefinition;
  script: Script;
  runId: string;
  /** Stop the seed run at the first event this accepts, instead of after K checkpoints. */
  stopAt?: (event: RunEvent) => boolean;
}

async function dirKB(dir: string): Promise<number> {
  let bytes = 0;
  for (const name of await readdir(dir)) bytes += (await stat(join(dir, name))).size;
  return round(bytes / 1024);
}

/**
 * Copies the database and fsyncs the copy, so that LevelDB's own fsyncs on open do not wait
 * for the write-back of the copy (which made the open time of the first trials jump).
 */
async function durableCopy(from: string, to: string): Promise<void> {
  await cp(from, to, { recursive: true });
  // The audit key and saved heads live beside the database: a copy without them is refused.
  if (existsSync(`${from}.audit`)) await cp(`${from}.audit`, `${to}.audit`, { recursive: true });
  for (const name of await readdir(to)) {
    const file = await open(join(to, name), 'r');
    try {
      await file.sync();
    } finally {
      await file.close();
    }
  }
  const dir = await open(to, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

const models = (script: Script) => ({ scripted: scriptedModel({ script, latencyMs: LATENCY_MS }) });

/** Runs `variant` on a fresh LevelDB at `dir` until it has made `k` checkpoints, then stops it. */
async function seed(dir: string, variant: Variant, k: number) {
  const storage = await levelStorage({ path: dir });
  const node = await createNode({ storage, models: models(variant.script), crews: [variant.def] });
  let count = 0;
  let reached!: () => void;
  const enough = new Promise<void>((resolve) => (reached = resolve));
  let stop = false;
  node.subscribe((event: RunEvent) => {
    if (variant.stopAt?.(event)) stop = true;
    if (event.type === 'checkpoint' && event.runId === variant.runId && (++count >= k || stop) && (stop || !variant.stopAt)) reached();
  });
  const run = await node.run(variant.def, { input: 'go', runId: variant.runId });
  await Promise.race([enough, run.settled().then(() => Promise.reject(new Error(`seed run of ${variant.name} ended before ${k} checkpoints`)))]);
  await node.close();
  const store = createRunStore(storage);
  const record = await store.requireRun(variant.runId);
  const raw = await storage.get(keys.checkpoint(variant.runId, record.checkpoint));
  await storage.close();
  if (record.status !== 'running') throw new Error(`seed run of ${variant.name} is ${record.status}, not resumable`);
  return { checkpointsSeen: count, resumesFromCheckpoint: record.checkpoint, checkpointKB: round((raw?.byteLength ?? 0) / 1024), dbKB: await dirKB(dir) };
}

/** Baseline: open the LevelDB copy and read (decode) its latest checkpoint. */
async function baselineTrial(dir: string, runId: string) {
  const t0 = performance.now();
  const storage = await levelStorage({ path: dir });
  const opened = performance.now();
  const checkpoint = await createRunStore(storage).latestCheckpoint(runId);
  const read = performance.now();
  await storage.close();
  if (!checkpoint) throw new Error('baseline found no checkpoint');
  return { openMs: opened - t0, openAndReadMs: read - t0 };
}

/** Cold resume of the run in the LevelDB copy at `dir`. */
async function resumeTrial(dir: string, variant: Variant, expectSeq: number) {
  const t0 = performance.now();
  const storage = await levelStorage({ path: dir });
  const opened = performance.now();
  const node = await createNode({ storage, models: models(variant.script), crews: [variant.def] });
  // Subscribed before anything else can run: the resume's first checkpoint is written by
  // LevelDB on its thread pool and reported from a later turn of the event loop.
  let firstCheckpoint!: (seq: number) => void;
  const checkpointed = new Promise<number>((resolve) => (firstCheckpoint = resolve));
  const unsubscribe = node.subscribe((event: RunEvent) => {
    if (event.type === 'checkpoint' && event.runId === variant.runId) firstCheckpoint(event.seq);
  });
  const handle = node.get(variant.runId);
  const handled = performance.now();
  if (!handle) throw new Error(`createNode did not resume ${variant.runId}`);
  const seq = await checkpointed;
  const done = performance.now();
  unsubscribe();
  await node.close();
  await storage.close();
  return { openMs: opened - t0, createNodeMs: handled - opened, handleMs: handled - t0, firstCheckpointMs: done - t0, seqOk: seq === expectSeq };
}

/** Baseline of the long conversation: open the LevelDB copy and read one small key. */
async function oneKeyTrial(dir: string, runId: string) {
  const t0 = performance.now();
  const storage = await levelStorage({ path: dir });
  const opened = performance.now();
  const value = await storage.get(keys.run(runId));
  const read = performance.now();
  const checkpoint = await createRunStore(storage).latestCheckpoint(runId);
  const checkpointRead = performance.now();
  await storage.close();
  if (!value || !checkpoint) throw new Error('baseline found no run record or no checkpoint');
  // The checkpoint read comes after the key read; counted as if it came right after the open.
  return { openMs: opened - t0, openAndReadKeyMs: read - t0, openAndReadCheckpointMs: opened - t0 + (checkpointRead - read) };
}

/**
 * Cold resume of a one-agent run holding ~`messages` messages: seeded with {@link loopModel}
 * (two messages a step), stopped by closing the node; every trial resumes a fresh copy.
 */
export async function benchConversationResume(root: string, options: { messages: number; trials: number }) {
  const steps = Math.ceil(options.messages / 2);
  const runId = 'resume-long';
  const def = loopCrew('resume-long', 1, steps * 4);
  const seedDir = join(root, 'long-seed');
  const t = performance.now();
  {
    const storage = await levelStorage({ path: seedDir });
    const node = await createNode({ storage, models: { loop: loopModel(steps * 4) }, crews: [def] });
    let n = 0;
    let reached!: () => void;
    const enough = new Promise<void>((resolve) => (reached = resolve));
    node.subscribe((event: RunEvent) => {
      if (event.type === 'model.call' && event.actor === 'worker' && ++n >= steps) reached();
    });
    const run = await node.run(def, { input: 'go', runId });
    await Promise.race([enough, run.settled().then(() => Promise.reject(new Error('long seed run ended early')))]);
    await node.close();
    await storage.close();
  }
  const seedSeconds = round((performance.now() - t) / 1000);
  const storage = await levelStorage({ path: seedDir });
  const record = await createRunStore(storage).requireRun(runId);
  const checkpoint = await createRunStore(storage).latestCheckpoint(runId);
  await storage.close();
  if (record.status !== 'running') throw new Error(`long seed run is ${record.status}, not resumable`);
  const messages = ((checkpoint?.snapshot as { children?: Record<string, { snapshot?: { context?: { conversation?: unknown[] } } }> })?.children?.worker?.snapshot?.context?.conversation ?? []).length;
  const models = { loop: loopModel(steps * 4, LATENCY_MS) };
  const copies: Array<[string, string]> = [];
  for (let i = 0; i <= options.trials; i++) {
    const pair: [string, string] = [join(root, `long-base-${i}`), join(root, `long-resume-${i}`)];
    await durableCopy(seedDir, pair[0]);
    await durableCopy(seedDir, pair[1]);
    copies.push(pair);
  }
  const base: Array<Awaited<ReturnType<typeof oneKeyTrial>>> = [];
  const resumed: Array<{ openMs: number; handleMs: number; firstCheckpointMs: number }> = [];
  for (let i = 0; i <= options.trials; i++) {
    const [a, b] = copies[i]!;
    const baseline = await oneKeyTrial(a, runId);
    const t0 = performance.now();
    const storage = await levelStorage({ path: b });
    const opened = performance.now();
    let firstCheckpoint!: () => void;
    const checkpointed = new Promise<void>((resolve) => (firstCheckpoint = resolve));
    const node = await createNode({ storage, models, crews: [def] });
    const unsubscribe = node.subscribe((event: RunEvent) => {
      if (event.type === 'checkpoint' && event.runId === runId) firstCheckpoint();
    });
    const handle = node.get(runId);
    const handled = performance.now();
    if (!handle) throw new Error(`createNode did not resume ${runId}`);
    await checkpointed;
    const done = performance.now();
    unsubscribe();
    await node.close();
    await storage.close();
    // Trial 0 is a warm-up and is discarded.
    if (i > 0) {
      base.push(baseline);
      resumed.push({ openMs: opened - t0, handleMs: handled - t0, firstCheckpointMs: done - t0 });
    }
  }
  const pick = <T, K extends keyof T>(rows: T[], key: K) => rows.map((r) => r[key] as number);
  const handle = summarize(pick(resumed, 'handleMs'));
  const oneKey = summarize(pick(base, 'openAndReadKeyMs'));
  return {
    messages,
    seed: { steps, seconds: seedSeconds, resumesFromCheckpoint: record.checkpoint, dbKB: await dirKB(seedDir) },
    trials: options.trials,
    warmupTrialsDiscarded: 1,
    baseline: {
      what: 'levelStorage open + get(run record)',
      levelOpen: summarize(pick(base, 'openMs')),
      levelOpenAndReadOneKey: oneKey,
      levelOpenAndReadLatestCheckpoint: summarize(pick(base, 'openAndReadCheckpointMs')),
    },
    coldResume: {
      what: 'levelStorage open + createNode({ crews }) until node.get(runId) is the resumed run',
      levelOpen: summarize(pick(resumed, 'openMs')),
      untilRunHandle: handle,
      untilFirstCheckpoint: summarize(pick(resumed, 'firstCheckpointMs')),
    },
    ratios: { runHandleP50VsOpenAndReadOneKeyP50: round(handle.p50Ms / oneKey.p50Ms) },
  };
}

async function benchVariant(root: string, variant: Variant, k: number, trials: number) {
  const seedDir = join(root, `${variant.name}-seed`);
  const seeded = await seed(seedDir, variant, k);
  const baseline: Array<Awaited<ReturnType<typeof baselineTrial>>> = [];
  const resumed: Array<Awaited<ReturnType<typeof resumeTrial>>> = [];
  // Every trial gets its own fresh, fsynced copy, made before any trial runs; they are removed
  // with the temp root afterwards.
  const copies: Array<[string, string]> = [];
  for (let i = 0; i <= trials; i++) {
    const pair: [string, string] = [join(root, `${variant.name}-base-${i}`), join(root, `${variant.name}-resume-${i}`)];
    await durableCopy(seedDir, pair[0]);
    await durableCopy(seedDir, pair[1]);
    copies.push(pair);
  }
  // Trial 0 is a warm-up and is discarded; baseline and resume alternate.
  for (let i = 0; i <= trials; i++) {
    const [a, b] = copies[i]!;
    const base = await baselineTrial(a, variant.runId);
    const res = await resumeTrial(b, variant, seeded.resumesFromCheckpoint + 1);
    if (i > 0) {
      baseline.push(base);
      resumed.push(res);
    }
  }
  const pick = <T, K extends keyof T>(rows: T[], key: K) => rows.map((r) => r[key] as number);
  const handle = summarize(pick(resumed, 'handleMs'));
  const first = summarize(pick(resumed, 'firstCheckpointMs'));
  const base = summarize(pick(baseline, 'openAndReadMs'));
  return {
    agents: variant.def.agents.length,
    k,
    seed: seeded,
    trials,
    warmupTrialsDiscarded: 1,
    baseline: {
      what: 'levelStorage open + read latest checkpoint',
      levelOpen: summarize(pick(baseline, 'openMs')),
      levelOpenAndReadCheckpoint: base,
    },
    coldResume: {
      levelOpen: summarize(pick(resumed, 'openMs')),
      createNode: summarize(pick(resumed, 'createNodeMs')),
      untilRunHandle: handle,
      untilFirstCheckpoint: first,
      firstCheckpointSeqOk: resumed.every((r) => r.seqOk),
    },
    ratios: {
      runHandleP50VsBaselineP50: round(handle.p50Ms / base.p50Ms),
      firstCheckpointP50VsBaselineP50: round(first.p50Ms / base.p50Ms),
    },
  };
}

export interface ResumeOptions {
  k?: number;
  trials?: number;
  /** Messages in the long conversation resumed by `conversation` (0 leaves it out). Default 5,000. */
  messages?: number;
  /** Only the long-conversation variant. */
  conversationOnly?: boolean;
  /**
   * Trials of the long conversation. Default 30: its figure is a ratio of two medians of a
   * few milliseconds each, and with 10 trials one run's median moved it by a third.
   */
  conversationTrials?: number;
}

export async function benchResume(options: ResumeOptions = {}) {
  const k = options.k ?? 50;
  const trials = options.trials ?? 10;
  const root = await tempDir('resume');
  try {
    const messages = options.messages ?? 5_000;
    const conversation = messages > 0 ? await benchConversationResume(root, { messages, trials: options.conversationTrials ?? Math.max(trials, 30) }) : undefined;
    if (options.conversationOnly) return { scriptedLatencyMs: LATENCY_MS, conversation };
    // One agent with far more steps than K checkpoints cover.
    const one = stepCrew('resume-one', 200);
    // Ten agents, each with its own script of 5 steps: K checkpoints end inside the 3rd or 4th.
    const tenIds = Array.from({ length: 10 }, (_, i) => `agent${i + 1}`);
    const ten = stepCrew('resume-ten', 5, tenIds);
    const oneAgent = await benchVariant(root, { name: 'one', def: one.def, script: one.script, runId: 'resume-one' }, k, trials);
    const tenAgents = await benchVariant(root, { name: 'ten', def: ten.def, script: ten.script, runId: 'resume-ten' }, k, trials);
    // Twenty agents in sequence, 50 steps each (~100 messages), stopped while the last one is
    // half-way: nineteen finished conversations that a resume need not read.
    const members = Array.from({ length: 20 }, (_, i) => `member${i + 1}`);
    const many = stepCrew('resume-crew', 50, members);
    let lastSteps = 0;
    const crewAgents = await benchVariant(
      root,
      { name: 'crew', def: many.def, script: many.script, runId: 'resume-crew', stopAt: (e) => e.type === 'model.call' && e.actor === members.at(-1) && ++lastSteps >= 25 },
      k,
      trials,
    );
    return { scriptedLatencyMs: LATENCY_MS, conversation, oneAgent, tenAgents, crewAgents };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** Smaller sizes for `--quick` (the long conversation keeps its 5,000 messages: that is the figure). */
export const quickResume: ResumeOptions = { k: 20, trials: 3, conversationTrials: 3 };

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const quick = process.argv.includes('--quick');
  const resume = await benchResume({ ...(quick ? quickResume : {}), conversationOnly: process.argv.includes('--conversation') });
  console.log(JSON.stringify({ machine: await machineInfo(), resume }, null, 2));
}
