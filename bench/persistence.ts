/**
 * What persistence costs per agent step, as the conversation and the crew grow:
 *
 * - conversation: one agent (a one-agent crew on a fresh LevelDB) takes `steps` steps, each
 *   a model turn asking for one trivial `read` tool and the tool's result: two messages a
 *   step. Bytes handed to the storage and wall time per step in windows of 20 steps around
 *   100, 1,000 and 5,000 messages in the conversation (steps 50, 500 and 2,500), with the
 *   ratio to the window at 100 messages (computed within each trial, median over trials).
 * - crew: crews of 10, 100 and 1,000 agents in which one agent works (the first agent of a
 *   sequential crew; the others wait for their turn, so they are in every snapshot but never
 *   change); bytes and time per step of that agent over steps 10..30, ratio to the 10-agent
 *   crew. The sizes are interleaved within each trial, so machine noise spreads over all.
 * - context: a raw LevelDB batch of one 1 KB put, same process.
 *
 * The model is scripted, with no latency, and picks its turn by `request.step` (O(1)): the
 * stock `scriptedModel` counts assistant messages and sums the conversation's tokens on every
 * call, O(conversation) work that is the script's, not the kernel's. Steps are timed from one
 * `model.call` event of the working agent to the next, so a step includes its model call, its
 * tool call and the checkpoints and writes in between. Bytes are keys + values of every batch
 * the node hands to `Storage.write` (the write queue may merge batches; bytes are the same).
 * An unmeasured warm-up run comes first, so the window at 100 messages does not pay for JIT.
 *
 *   npx tsx bench/persistence.ts [--quick] [--sync] [--trials N] [--only conversation|crews]
 *
 * Prints one JSON object. Not a test: nothing is asserted.
 */
import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { z } from 'zod';
import { agent, createNode, crew, msg, tool, type ModelProvider, type RunEvent } from '../index.js';
import { levelStorage } from '../storage/level.js';
import { countingStorage, machineInfo, percentile, round, tempDir } from './durable-step.js';

/** Steps of one measuring window. */
const WINDOW = 20;

const noop = tool({ name: 'noop', description: 'Returns its argument.', input: z.object({ i: z.number() }), effect: 'read', run: ({ i }) => ({ ok: i }) });

/**
 * A scripted model whose answer depends on `request.step` only: steps below `steps` ask for
 * `noop` with some text (a realistic turn, ~90 characters), step `steps` answers. A
 * resumed run gets the answers an uninterrupted one would.
 */
export function loopModel(steps: number, latencyMs = 0): ModelProvider {
  return {
    id: 'loop',
    async generate(request, { signal }) {
      if (latencyMs > 0) await sleep(latencyMs, undefined, { signal });
      const n = request.step;
      const usage = { inputTokens: 10, outputTokens: 20 };
      if (n >= steps) return { message: msg.assistant(`${request.agent}: done after ${steps} steps`), usage, finishReason: 'stop' };
      return {
        message: msg.assistant(`step ${n}: looking at item ${n} of the inventory and deciding what to do next`, [{ id: `call_${n}`, name: 'noop', args: { i: n } }]),
        usage,
        finishReason: 'tool_calls',
      };
    },
  };
}

/** A sequential crew of `size` agents (`worker` first) on the {@link loopModel}. */
export function loopCrew(id: string, size: number, steps: number) {
  const ids = Array.from({ length: size }, (_, i) => (i === 0 ? 'worker' : `idle${i}`));
  return crew({
    id,
    agents: ids.map((a) => agent({ id: a, role: a, instructions: 'Work through the inventory.', model: 'loop', tools: [noop], maxSteps: steps + 10 })),
  });
}

interface Mark {
  bytes: number;
  batches: number;
  t: number;
}

/** One run: the worker takes `steps` steps; per-step marks at each of its model calls. */
async function agentSteps(o: { steps: number; crewSize: number; sync: boolean }): Promise<Mark[]> {
  const dir = await tempDir('persist');
  const def = loopCrew('persist', o.crewSize, o.steps + 5);
  const level = await levelStorage({ path: dir });
  const { storage, stats } = countingStorage(level);
  const node = await createNode({ storage, models: { loop: loopModel(o.steps + 5) }, sync: o.sync, resume: false });
  const marks: Mark[] = [];
  let reached!: () => void;
  const enough = new Promise<void>((resolve) => (reached = resolve));
  const unsubscribe = node.subscribe((e: RunEvent) => {
    if (e.type !== 'model.call' || e.actor !== 'worker') return;
    marks.push({ bytes: stats.bytes, batches: stats.batches, t: performance.now() });
    if (marks.length > o.steps) reached();
  });
  try {
    const run = await node.run(def, { input: 'go', runId: 'p1' });
    await Promise.race([enough, run.settled().then((r) => Promise.reject(new Error(`bench run ended ${r.status} after ${marks.length} steps`)))]);
    await run.stop();
  } finally {
    unsubscribe();
    await node.close();
    await level.close();
    await rm(dir, { recursive: true, force: true });
  }
  return marks;
}

/** Bytes and ms per step over the {@link WINDOW} steps centred on step `at`. */
function windowAt(marks: readonly Mark[], at: number) {
  const from = Math.max(1, Math.min(at - WINDOW / 2, marks.length - 1 - WINDOW));
  const a = marks[from]!;
  const b = marks[from + WINDOW]!;
  const intervals = marks.slice(from + 1, from + WINDOW + 1).map((m, i) => m.t - marks[from + i]!.t);
  return {
    step: at,
    messages: at * 2,
    bytesPerStep: Math.round((b.bytes - a.bytes) / WINDOW),
    batchesPerStep: round((b.batches - a.batches) / WINDOW),
    msPerStep: round((b.t - a.t) / WINDOW, 3),
    p50MsPerStep: round(percentile(intervals, 50), 3),
  };
}

const median = (xs: readonly number[]) => percentile(xs, 50);

/** Medians over trials of each field of rows that line up (same index = same window). */
function medianRows<T extends Record<string, number>>(trials: T[][]): T[] {
  return trials[0]!.map((row, i) => Object.fromEntries(Object.keys(row).map((k) => [k, round(median(trials.map((t) => t[i]![k]!)), 3)])) as T);
}

/** Raw LevelDB: one 1 KB put per batch. */
async function rawLevel(sync: boolean, n: number) {
  const dir = await tempDir('persist-raw');
  const db = new ClassicLevel<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
  await db.open();
  const value = new Uint8Array(1024).fill(7);
  for (let i = 0; i < 50; i++) await db.put(`warm${i}`, value, { sync });
  const t = performance.now();
  for (let i = 0; i < n; i++) await db.batch([{ type: 'put', key: `k${i}`, value }], { sync });
  const ms = (performance.now() - t) / n;
  await db.close();
  await rm(dir, { recursive: true, force: true });
  return { batches: n, msPerBatch: round(ms, 4) };
}

/** Sizes of {@link benchPersistence}. */
export interface PersistenceOptions {
  sync?: boolean;
  trials?: number;
  /** Steps of the conversation run, and the steps at whose windows it is measured. */
  steps?: number;
  windows?: number[];
  crewSizes?: number[];
  crewSteps?: number;
  /** Leave out a part: `conversation` or `crews`. */
  only?: 'conversation' | 'crews';
}

export const quickPersistence: PersistenceOptions = { trials: 1, steps: 560, windows: [50, 500], crewSizes: [10, 100, 1_000], crewSteps: 40 };

export async function benchPersistence(options: PersistenceOptions = {}) {
  const o = { sync: false, trials: 5, steps: 2_520, windows: [50, 500, 2_500], crewSizes: [10, 100, 1_000], crewSteps: 40, ...options };
  const out: Record<string, unknown> = { sync: o.sync, trials: o.trials, windowSteps: WINDOW };
  // Warm-up (discarded): JIT, module loading, LevelDB's native side.
  await agentSteps({ steps: 120, crewSize: 1, sync: o.sync });

  if (o.only !== 'crews') {
    const perTrial: Array<Array<ReturnType<typeof windowAt>>> = [];
    const ratios: Array<Array<{ bytesRatio: number; msRatio: number; p50MsRatio: number }>> = [];
    for (let trial = 0; trial < o.trials; trial++) {
      const marks = await agentSteps({ steps: o.steps, crewSize: 1, sync: o.sync });
      const rows = o.windows.map((at) => windowAt(marks, at));
      perTrial.push(rows);
      ratios.push(rows.map((r) => ({ bytesRatio: r.bytesPerStep / rows[0]!.bytesPerStep, msRatio: r.msPerStep / rows[0]!.msPerStep, p50MsRatio: r.p50MsPerStep / rows[0]!.p50MsPerStep })));
    }
    const med = medianRows(perTrial);
    const medRatios = medianRows(ratios);
    out.conversation = {
      what: `one agent, ${o.steps} steps (2 messages a step); per-step bytes and ms over ${WINDOW} steps around each window; ratios to the window at ${o.windows[0]! * 2} messages, per trial, median over trials`,
      windows: med.map((r, i) => ({ ...r, ...medRatios[i]! })),
      msPerStepAllTrials: perTrial.map((rows) => rows.map((r) => r.msPerStep)),
    };
  }

  if (o.only !== 'conversation') {
    const perTrial: Array<Array<ReturnType<typeof windowAt> & { agents: number }>> = [];
    const ratios: Array<Array<{ bytesRatio: number; msRatio: number; p50MsRatio: number }>> = [];
    for (let trial = 0; trial < o.trials; trial++) {
      const rows: Array<ReturnType<typeof windowAt> & { agents: number }> = [];
      for (const size of o.crewSizes) {
        const marks = await agentSteps({ steps: o.crewSteps, crewSize: size, sync: o.sync });
        rows.push({ agents: size, ...windowAt(marks, Math.round(o.crewSteps / 2)) });
      }
      perTrial.push(rows);
      ratios.push(rows.map((r) => ({ bytesRatio: r.bytesPerStep / rows[0]!.bytesPerStep, msRatio: r.msPerStep / rows[0]!.msPerStep, p50MsRatio: r.p50MsPerStep / rows[0]!.p50MsPerStep })));
    }
    const med = medianRows(perTrial);
    const medRatios = medianRows(ratios);
    out.crews = {
      what: `crews of ${o.crewSizes.join(' / ')} agents, one works: its per-step bytes and ms over steps ${Math.round(o.crewSteps / 2) - WINDOW / 2}..${Math.round(o.crewSteps / 2) + WINDOW / 2}; ratios to the ${o.crewSizes[0]}-agent crew, per trial, median over trials`,
      sizes: med.map((r, i) => ({ ...r, ...medRatios[i]! })),
      msPerStepAllTrials: perTrial.map((rows) => rows.map((r) => r.msPerStep)),
    };
  }

  out.context = { rawLevel1KB: await rawLevel(o.sync, o.sync ? 300 : 3_000) };
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const arg = (name: string) => {
    const at = process.argv.indexOf(name);
    return at === -1 ? undefined : process.argv[at + 1];
  };
  const quick = process.argv.includes('--quick');
  const sync = process.argv.includes('--sync');
  const trials = arg('--trials');
  const only = arg('--only') as PersistenceOptions['only'];
  const persistence = await benchPersistence({ ...(quick ? quickPersistence : {}), sync, ...(trials ? { trials: Number(trials) } : {}), ...(only ? { only } : {}) });
  console.log(JSON.stringify({ machine: await machineInfo(), persistence }, null, 2));
}
