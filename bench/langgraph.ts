/**
 * The same scripted workflow on Troupe and on LangGraph.js, in the same process: an agent
 * loop of N iterations, each one "model" step (a deterministic scripted turn, no LLM) that
 * asks for a trivial `read` tool, then the "tool" step; the last model turn answers. The
 * conversation (assistant turns and tool results) is the persisted state on both sides, and
 * both checkpoint after every step:
 *
 * - Troupe: {@link benchTroupeSteps} (a one-agent crew on `levelStorage`);
 * - LangGraph: a `StateGraph` (`model` → `tool` → `model` … → END) compiled with
 *   `SqliteSaver` from `@langchain/langgraph-checkpoint-sqlite` on a temp file. The saver
 *   turns on WAL; better-sqlite3 builds SQLite with `synchronous=NORMAL` in WAL mode, so a
 *   commit survives the process being killed but is not fsynced: the same promise as Troupe's
 *   default `sync: false`. The fsync variants pair `synchronous=FULL` with `sync: true`.
 *
 * The LangGraph packages are devDependencies; when they (or better-sqlite3's native build)
 * are missing, the section is skipped with a note.
 *
 *   npx tsx bench/langgraph.ts [--quick]
 *
 * Prints one JSON object. Not a test: nothing is asserted.
 */
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { z } from 'zod';
import { benchTroupeSteps, machineInfo, repoFile, round, tempDir } from './durable-step.js';

/** A provider-neutral message, as both sides persist it. */
interface Msg {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  toolCalls?: Array<{ id: string; name: string; args: unknown }>;
  toolCallId?: string;
}

/** The same turns {@link stepCrew}'s scripted model plays: `steps - 1` noop calls, then an answer. */
function scriptedTurn(step: number, steps: number): Msg {
  if (step >= steps) return { role: 'assistant', content: `worker: done after ${steps} steps` };
  return { role: 'assistant', content: `worker step ${step}`, toolCalls: [{ id: `call-${step}`, name: 'noop', args: { i: step - 1 } }] };
}

const noopInput = z.object({ i: z.number() });

type LangGraphModules = {
  langgraph: typeof import('@langchain/langgraph');
  sqlite: typeof import('@langchain/langgraph-checkpoint-sqlite');
};

/** Loads the optional packages, or says why they cannot be used. */
async function load(): Promise<LangGraphModules | { skipped: string }> {
  try {
    const langgraph = await import('@langchain/langgraph');
    const sqlite = await import('@langchain/langgraph-checkpoint-sqlite');
    return { langgraph, sqlite };
  } catch (error) {
    return { skipped: `LangGraph packages not installed (npm install): ${(error as Error).message.split('\n')[0]}` };
  }
}

/** One LangGraph run of `steps` iterations on a fresh SQLite file. */
async function langGraphRun(mods: LangGraphModules, dir: string, steps: number, synchronous: 'default' | 'FULL') {
  const { Annotation, StateGraph, START, END } = mods.langgraph;
  const State = Annotation.Root({
    messages: Annotation<Msg[]>({ reducer: (a, b) => a.concat(b), default: () => [] }),
    step: Annotation<number>({ reducer: (_a, b) => b, default: () => 0 }),
  });
  const saver = mods.sqlite.SqliteSaver.fromConnString(join(dir, 'langgraph.sqlite'));
  // Creates the tables now (the saver would on first use), so the pragmas can be read back.
  (saver as unknown as { setup(): void }).setup();
  if (synchronous === 'FULL') saver.db.pragma('synchronous=FULL');
  const pragmas = { journalMode: saver.db.pragma('journal_mode', { simple: true }), synchronous: saver.db.pragma('synchronous', { simple: true }) };
  let modelCalls = 0;
  let toolCalls = 0;
  const graph = new StateGraph(State)
    .addNode('model', async (state) => {
      modelCalls += 1;
      const step = state.step + 1;
      return { messages: [scriptedTurn(step, steps)], step };
    })
    .addNode('tool', async (state) => {
      const last = state.messages[state.messages.length - 1]!;
      const results: Msg[] = (last.toolCalls ?? []).map((call) => {
        toolCalls += 1;
        const { i } = noopInput.parse(call.args);
        return { role: 'tool', toolCallId: call.id, content: JSON.stringify({ ok: i }) };
      });
      return { messages: results };
    })
    .addEdge(START, 'model')
    .addConditionalEdges('model', (state) => (state.messages[state.messages.length - 1]?.toolCalls?.length ? 'tool' : END), ['tool', END])
    .addEdge('tool', 'model')
    .compile({ checkpointer: saver });
  try {
    const start = performance.now();
    const final = await graph.invoke(
      { messages: [{ role: 'system', content: 'Take steps.' }, { role: 'user', content: 'go' }] },
      { configurable: { thread_id: 'bench' }, recursionLimit: steps * 2 + 10 },
    );
    const totalMs = performance.now() - start;
    const last = final.messages[final.messages.length - 1];
    if (last?.content !== `worker: done after ${steps} steps`) throw new Error('LangGraph run did not finish its script');
    const checkpoints = (saver.db.prepare('SELECT count(*) AS n FROM checkpoints').get() as { n: number }).n;
    const writes = (saver.db.prepare('SELECT count(*) AS n FROM writes').get() as { n: number }).n;
    return {
      sqlite: pragmas,
      agentSteps: modelCalls,
      modelCalls,
      toolCalls,
      checkpoints,
      pendingWriteRows: writes,
      totalMs: round(totalMs),
      agentStepsPerSec: Math.round((modelCalls / totalMs) * 1000),
      msPerAgentStep: round(totalMs / modelCalls),
    };
  } finally {
    saver.db.close();
  }
}

/**
 * The most steps/s a runtime that persists a step as Troupe does can reach here: two LevelDB
 * batches in series per step (the model's answer with the intents of its tool calls, then
 * the results with the next step's start), each of `ops` puts totalling `bytes`, written with
 * classic-level itself and nothing else done. A ceiling for the ratio to LangGraph, whatever
 * the rest of the runtime costs.
 */
async function durableStepCeiling(dir: string, sync: boolean, steps: number, ops: number, bytes: number) {
  const db = new ClassicLevel<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
  await db.open();
  const size = Math.max(1, Math.round(bytes / ops));
  const value = new Uint8Array(size).map((_, i) => (i * 131 + 7) & 0xff);
  const batch = (step: number, half: number) => Array.from({ length: ops }, (_, i) => ({ type: 'put' as const, key: `run:bench:${String(step).padStart(8, '0')}:${half}:${i}`, value }));
  try {
    // As levelStorage writes, a chained batch with the options given to its write once (the
    // array form copies them into every op, which made a batch's preparation 3-4x slower).
    const write = (ops: ReturnType<typeof batch>) => {
      const chain = db.batch();
      for (const op of ops) chain.put(op.key, op.value);
      return sync ? chain.write({ sync: true }) : chain.write();
    };
    for (let i = 0; i < 20; i++) await write(batch(-1, i));
    const start = performance.now();
    for (let step = 0; step < steps; step++) {
      await write(batch(step, 0));
      await write(batch(step, 1));
    }
    const totalMs = performance.now() - start;
    return { sync, steps, batchesPerStep: 2, opsPerBatch: ops, bytesPerBatch: size * ops, totalMs: round(totalMs), stepsPerSec: Math.round((steps / totalMs) * 1000) };
  } finally {
    await db.close();
  }
}

/** Runs `trial` `trials` times and keeps the median by `totalMs`. */
async function median<T extends { totalMs: number }>(trials: number, trial: (i: number) => Promise<T>) {
  const runs: T[] = [];
  for (let i = 0; i < trials; i++) runs.push(await trial(i));
  const sorted = [...runs].sort((a, b) => a.totalMs - b.totalMs);
  return { ...sorted[Math.floor(sorted.length / 2)]!, trials, totalMsAll: runs.map((r) => r.totalMs) };
}

/** Sizes of {@link benchLangGraph}. */
export interface LangGraphOptions {
  steps?: number;
  stepsFsync?: number;
  trials?: number;
}

/** Troupe vs LangGraph.js + SqliteSaver on the same scripted loop; skipped when not installed. */
export async function benchLangGraph(options: LangGraphOptions = {}) {
  const o = { steps: 200, stepsFsync: 100, trials: 3, ...options };
  const mods = await load();
  if ('skipped' in mods) return { skipped: true, note: mods.skipped };
  const root = await tempDir('langgraph');
  try {
    let n = 0;
    const dir = (name: string) => join(root, `${name}-${n++}`);
    const lgDir = async (name: string) => {
      const d = dir(name);
      await mkdir(d, { recursive: true });
      return d;
    };
    try {
      // Warm-up of both (discarded); also proves better-sqlite3's native module loads.
      await langGraphRun(mods, await lgDir('warm'), 20, 'default');
    } catch (error) {
      return { skipped: true, note: `LangGraph SQLite checkpointer unusable here (better-sqlite3 native build missing? run \`npm rebuild better-sqlite3\`): ${(error as Error).message.split('\n')[0]}` };
    }
    await benchTroupeSteps(dir('warm-troupe'), false, 20);

    const troupeDefault = await median(o.trials, async () => benchTroupeSteps(dir('troupe'), false, o.steps));
    const langGraphDefault = await median(o.trials, async () => langGraphRun(mods, await lgDir('lg'), o.steps, 'default'));
    const troupeFsync = await median(o.trials, async () => benchTroupeSteps(dir('troupe-sync'), true, o.stepsFsync));
    const langGraphFsync = await median(o.trials, async () => langGraphRun(mods, await lgDir('lg-full'), o.stepsFsync, 'FULL'));
    const stepsPerSec = (r: { agentSteps: number; totalMs: number }) => Math.round((r.agentSteps / r.totalMs) * 1000);
    const pick = (t: Awaited<ReturnType<typeof benchTroupeSteps>> & { totalMsAll: number[] }) => ({
      storage: 'levelStorage',
      sync: t.sync,
      agentSteps: t.agentSteps,
      toolCalls: t.toolCalls,
      checkpoints: t.checkpoints,
      totalMs: t.totalMs,
      totalMsAll: t.totalMsAll,
      agentStepsPerSec: stepsPerSec(t),
      msPerAgentStep: t.msPerAgentStep,
      meanBatchOps: t.meanBatchOps,
      meanBatchKB: t.meanBatchKB,
    });
    // Two batches of the size Troupe's own step wrote, and nothing else: the ceiling.
    const ceiling = async (t: Awaited<ReturnType<typeof benchTroupeSteps>>, steps: number, langGraphStepsPerSec: number) => {
      const c = await median(o.trials, async () => durableStepCeiling(dir(`ceiling-${t.sync}`), t.sync, steps, Math.round(t.meanBatchOps), t.meanBatchKB * 1024));
      return { ...c, overLangGraphStepsPerSec: round(c.stepsPerSec / langGraphStepsPerSec) };
    };
    const versions = async () => {
      const v = async (p: string) => (JSON.parse(await readFile(repoFile(`node_modules/${p}/package.json`), 'utf8')) as { version: string }).version;
      return { '@langchain/langgraph': await v('@langchain/langgraph'), '@langchain/langgraph-checkpoint-sqlite': await v('@langchain/langgraph-checkpoint-sqlite'), 'better-sqlite3': await v('better-sqlite3') };
    };
    return {
      what: 'one agent loop: N model steps, N-1 tool steps, checkpoint after every step; agent step = one model step (+ its tool step); median of trials',
      versions: await versions(),
      noFsync: {
        steps: o.steps,
        troupe: pick(troupeDefault),
        langGraph: { checkpointer: 'SqliteSaver (WAL, as shipped)', ...langGraphDefault },
        troupeOverLangGraphStepsPerSec: round(stepsPerSec(troupeDefault) / langGraphDefault.agentStepsPerSec),
        durableStepCeiling: await ceiling(troupeDefault, o.steps, langGraphDefault.agentStepsPerSec),
      },
      fsync: {
        steps: o.stepsFsync,
        troupe: pick(troupeFsync),
        langGraph: { checkpointer: 'SqliteSaver (WAL, synchronous=FULL)', ...langGraphFsync },
        troupeOverLangGraphStepsPerSec: round(stepsPerSec(troupeFsync) / langGraphFsync.agentStepsPerSec),
        durableStepCeiling: await ceiling(troupeFsync, o.stepsFsync, langGraphFsync.agentStepsPerSec),
      },
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/** Smaller sizes for `--quick`. */
export const quickLangGraph: LangGraphOptions = { steps: 40, stepsFsync: 20, trials: 1 };

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const quick = process.argv.includes('--quick');
  const langgraph = await benchLangGraph(quick ? quickLangGraph : {});
  console.log(JSON.stringify({ machine: await machineInfo(), langgraph }, null, 2));
}
