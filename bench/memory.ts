/**
 * Memory per idle agent, and how many agents one node holds. Every measurement runs in its
 * own child process started with `--expose-gc`, so the heap is forced clean before each
 * reading and no other section's garbage is counted:
 *
 * 1. open a LevelDB (off the JS heap) and a node, play a tiny warm-up run to the end (so
 *    code paths are compiled and lazily built objects exist), force GC, read the heap;
 * 2. start one run of a sequential crew of K agents whose model answers at once, except for
 *    one "blocker" agent whose model call never returns, which keeps the run alive:
 *    - `finished`: the blocker is the last agent, so K-1 agents did their task and sit
 *      idle with their conversation (system prompt, task, answer) in their context;
 *    - `fresh`: the blocker is the first agent, so K-1 agents were never given work;
 * 3. once the blocker is waiting and the last checkpoint is written, force GC, read again.
 *
 * Per agent = heap growth / K (the run, its mailboxes and the node's per-actor bookkeeping
 * included). "Agents per GiB" extrapolates that linearly, heap only.
 *
 *   npx tsx bench/memory.ts [--quick]
 *
 * Prints one JSON object. Not a test: nothing is asserted.
 */
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { agent, createNode, crew, msg, TroupeError, ErrorCode, type ModelProvider, type RunEvent } from '../index.js';
import { createRunStore, keys } from '../core/run-store.js';
import { levelStorage } from '../storage/level.js';
import { childScript, machineInfo, round, tempDir } from './durable-step.js';

type Mode = 'finished' | 'fresh';

const GiB = 1024 ** 3;

/** A sequential crew of `k` agents with short, realistic instructions. */
function idleCrew(k: number) {
  const agents = Array.from({ length: k }, (_, i) =>
    agent({ id: `agent${i + 1}`, role: `Specialist number ${i + 1}`, instructions: `You are specialist ${i + 1}. Read the task, answer in one short paragraph.`, model: 'bench' }),
  );
  return crew({ id: `idle${k}`, agents });
}

/**
 * Answers every agent at once with a short paragraph, except `blocker`, whose call waits
 * until the run is stopped (it honours the abort signal). `onBlocked` fires when it is asked.
 */
function benchModel(blocker: string, onBlocked: () => void): ModelProvider {
  return {
    id: 'bench',
    generate(request, { signal }) {
      if (request.agent === blocker) {
        onBlocked();
        return new Promise((_, reject) => signal.addEventListener('abort', () => reject(new TroupeError(ErrorCode.MODEL_FAILED, 'stopped')), { once: true }));
      }
      const text = `${request.agent} looked at the task and concludes that the answer is ${request.agent.length * 7}.`;
      return Promise.resolve({ message: msg.assistant(text) as never, usage: { inputTokens: 40, outputTokens: 20 } });
    },
  };
}

/** Forces full collections until the heap stops shrinking. */
async function settledHeap() {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('memory bench child needs --expose-gc');
  let last = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 10; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
    const used = process.memoryUsage().heapUsed;
    if (used >= last - 1024) break;
    last = used;
  }
  return process.memoryUsage();
}

/** The child: one measurement of `k` agents in `mode`; prints one JSON line. */
async function child(k: number, mode: Mode) {
  const dir = await tempDir(`mem-${mode}-${k}`);
  const storage = await levelStorage({ path: dir });
  try {
    let blocked!: () => void;
    const waiting = new Promise<void>((resolve) => (blocked = resolve));
    const def = idleCrew(k);
    const blocker = mode === 'finished' ? `agent${k}` : 'agent1';
    const warm = idleCrew(2);
    const node = await createNode({ storage, models: { bench: benchModel('none', () => {}) }, crews: [], resume: false });
    // Warm-up on its own node: a 2-agent run to the end, so the measured node pays no first-use costs.
    await (await node.run(warm, { input: 'warm up', runId: 'warm' })).result();
    await node.close();

    const measured = await createNode({ storage, models: { bench: benchModel(blocker, () => blocked()) }, resume: false });
    let checkpoints = 0;
    measured.subscribe((event: RunEvent) => {
      if (event.type === 'checkpoint') checkpoints += 1;
    });
    const before = await settledHeap();
    const start = performance.now();
    const run = await measured.run(def, { input: 'Estimate the answer to the question in one paragraph.', runId: 'idle' });
    await waiting;
    const blockedMs = performance.now() - start;
    // Without GC: what the node holds while its write queue is still behind (captured,
    // not yet written checkpoints).
    const heapAtBlocked = process.memoryUsage().heapUsed;
    // Every checkpoint captured so far must be on disk before the reading: the node's write
    // queue holds captured batches in memory until LevelDB took them. A tell resolves once
    // its own checkpoint is durable, and the queue writes in order, so all earlier ones are.
    // The crew ignores the message type.
    await measured.tell('idle/crew', 'bench.flush', {});
    const readyMs = performance.now() - start;
    const after = await settledHeap();
    const record = await createRunStore(storage).requireRun('idle');
    const checkpointBytes = (await storage.get(keys.checkpoint('idle', record.checkpoint)))?.byteLength ?? 0;
    const heapPerAgent = (after.heapUsed - before.heapUsed) / k;
    const out = {
      k,
      mode,
      agentsFinished: mode === 'finished' ? k - 1 : 0,
      runStatus: run.status,
      lastAgentAskedMs: round(blockedMs),
      allCheckpointsDurableMs: round(readyMs),
      heapWhenLastAgentAskedMB: round(heapAtBlocked / 2 ** 20),
      checkpoints,
      heapUsedMB: { before: round(before.heapUsed / 2 ** 20), after: round(after.heapUsed / 2 ** 20) },
      heapPerAgentKB: round(heapPerAgent / 1024),
      externalPerAgentKB: round((after.external - before.external) / k / 1024),
      rssDeltaMB: round((after.rss - before.rss) / 2 ** 20),
      checkpointKB: round(checkpointBytes / 1024),
      checkpointPerAgentKB: round(checkpointBytes / k / 1024),
      agentsPerGiBHeap: Math.floor(GiB / heapPerAgent),
    };
    await measured.close();
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } finally {
    await storage.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Runs one measurement in a fresh `node --expose-gc` child and returns its JSON line. */
function measure(k: number, mode: Mode): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, ['--expose-gc', ...childScript(new URL(import.meta.url)), '--child', String(k), mode], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d));
    proc.stderr.on('data', (d: Buffer) => (stderr += d));
    proc.on('error', reject);
    proc.on('close', (code) => {
      const line = stdout.trim().split('\n').pop();
      if (code !== 0 || !line) return reject(new Error(`memory child k=${k} ${mode} exited ${code}: ${stderr.slice(-2000)}`));
      resolve(JSON.parse(line) as Record<string, unknown>);
    });
  });
}

/** Sizes of {@link benchMemory}. */
export interface MemoryOptions {
  /** K for crews whose agents finished their task. Default 10, 100. */
  finishedKs?: readonly number[];
  /** K for crews whose agents never got work. Default 10, 100, 1000. */
  freshKs?: readonly number[];
}

/**
 * Heap per idle agent for K agents, finished and fresh; one child process per reading.
 * 1000 finished agents are left out by default: a sequential crew checkpoints every agent's
 * snapshot at every step, so getting 999 agents through their task costs O(K²) (about 65 s
 * and a 1.5 GB write backlog here); `--full` (or `finishedKs`) measures it.
 */
export async function benchMemory(options: MemoryOptions = {}) {
  const finishedKs = options.finishedKs ?? [10, 100];
  const freshKs = options.freshKs ?? [10, 100, 1000];
  const finished: Record<string, Record<string, unknown>> = {};
  const fresh: Record<string, Record<string, unknown>> = {};
  for (const k of finishedKs) finished[`k${k}`] = await measure(k, 'finished');
  for (const k of freshKs) fresh[`k${k}`] = await measure(k, 'fresh');
  const largestFinished = finished[`k${Math.max(...finishedKs)}`]!;
  const largestFresh = fresh[`k${Math.max(...freshKs)}`]!;
  const perAgentKB = Math.max(largestFinished.heapPerAgentKB as number, largestFresh.heapPerAgentKB as number);
  return {
    what: 'heap growth per agent of one live run (sequential crew, one agent blocked on its model call), forced GC, child process per reading',
    finished,
    fresh,
    summary: {
      heapPerFinishedAgentKB: largestFinished.heapPerAgentKB,
      atFinishedK: Math.max(...finishedKs),
      heapPerFreshAgentKB: largestFresh.heapPerAgentKB,
      atFreshK: Math.max(...freshKs),
      agentsPerGiBHeap: Math.floor(GiB / (perAgentKB * 1024)),
      over200KBPerAgent: perAgentKB > 200,
    },
  };
}

/** Smaller sizes for `--quick`. */
export const quickMemory: MemoryOptions = { finishedKs: [10, 100], freshKs: [10, 100] };

if (process.argv[2] === '--child') {
  await child(Number(process.argv[3]), process.argv[4] as Mode);
} else if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const quick = process.argv.includes('--quick');
  const full = process.argv.includes('--full');
  const memory = await benchMemory(quick ? quickMemory : full ? { finishedKs: [10, 100, 1000] } : {});
  console.log(JSON.stringify({ machine: await machineInfo(), memory }, null, 2));
}
