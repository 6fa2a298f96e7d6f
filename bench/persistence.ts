/**
 * What persistence costs per step, as the conversation and the crew grow:
 *
 * - conversation: one agent takes `steps` steps (a model call and a tool call each, two
 *   messages a step) on a fresh LevelDB; bytes written and wall time of the steps around
 *   100, 1,000 and 5,000 messages (a window of 20 steps each), ratio to the step at 100.
 * - crew: crews of 10, 100 and 1,000 agents in which one agent works (20 steps); bytes and
 *   time per step of that agent, ratio to the 10-agent crew.
 * - baseline: raw LevelDB, one 1 KB put per batch, same process.
 *
 *   npx tsx bench/persistence.ts [--quick] [--sync]
 *
 * Prints one JSON object. Not a test: nothing is asserted.
 */
import { rm } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { z } from 'zod';
import { agent, createNode, crew, scriptedModel, tool, type RunEvent } from '../index.js';
import { levelStorage } from '../storage/level.js';
import { countingStorage, machineInfo, round, tempDir } from './durable-step.js';

const noop = tool({ name: 'noop', description: 'Returns its argument.', input: z.object({ i: z.number() }), effect: 'read', run: ({ i }) => ({ ok: i }) });

/** Per-step bytes and ms of one agent's steps, sampled at the given step numbers. */
async function agentSteps(o: { steps: number; windows: number[]; crewSize: number; sync: boolean }) {
  const dir = await tempDir('persist');
  const ids = Array.from({ length: o.crewSize }, (_, i) => (i === 0 ? 'worker' : `idle${i}`));
  // A realistic turn: some text, one tool call; the conversation grows two messages a step.
  const script = (req: { agent: string; messages: readonly unknown[] }) => {
    const n = req.messages.filter((m) => (m as { role: string }).role === 'assistant').length;
    return n < o.steps - 1 ? { text: `step ${n + 1}: looking at item ${n} of the inventory and deciding what to do next`, toolCalls: [{ name: 'noop', args: { i: n } }] } : 'done';
  };
  const def = crew({
    id: 'persist',
    agents: ids.map((id) => agent({ id, role: id, instructions: 'Work through the inventory.', model: 'scripted', tools: [noop], maxSteps: o.steps + 10 })),
    // Only the first agent gets work; the others sit idle in the snapshot.
    process: { type: 'sequential' },
  });
  const level = await levelStorage({ path: dir });
  const { storage, stats } = countingStorage(level);
  const node = await createNode({ storage, models: { scripted: scriptedModel({ script, latencyMs: 0 }) }, sync: o.sync, resume: false });
  const marks: Array<{ bytes: number; t: number }> = [];
  const unsubscribe = node.subscribe((e: RunEvent) => {
    if (e.type === 'model.call' && e.actor === 'worker') marks.push({ bytes: stats.bytes, t: performance.now() });
  });
  try {
    const run = await node.run(def, { input: 'go', runId: 'p1' });
    await new Promise<void>((resolve) => node.subscribe((e) => e.type === 'model.call' && e.actor === 'worker' && marks.length >= o.steps && resolve()));
    await run.stop();
  } finally {
    unsubscribe();
    await node.close();
    await level.close();
    await rm(dir, { recursive: true, force: true });
  }
  return o.windows.map((at) => {
    const from = Math.max(1, Math.min(at, marks.length - 21));
    const a = marks[from]!;
    const b = marks[from + 20]!;
    return { step: at, messages: at * 2, bytesPerStep: Math.round((b.bytes - a.bytes) / 20), msPerStep: round((b.t - a.t) / 20, 3) };
  });
}

/** Raw LevelDB: one 1 KB put per batch. */
async function rawLevel(sync: boolean, n: number) {
  const dir = await tempDir('persist-raw');
  const db = new ClassicLevel<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
  await db.open();
  const value = new Uint8Array(1024).fill(7);
  const t = performance.now();
  for (let i = 0; i < n; i++) await db.batch([{ type: 'put', key: `k${i}`, value }], { sync });
  const ms = (performance.now() - t) / n;
  await db.close();
  await rm(dir, { recursive: true, force: true });
  return { msPerBatch: round(ms, 4) };
}

export async function benchPersistence(options: { quick?: boolean; sync?: boolean } = {}) {
  const sync = options.sync ?? false;
  const steps = options.quick ? 600 : 2_600;
  const conversation = await agentSteps({ steps, windows: options.quick ? [50, 500] : [50, 500, 2_500], crewSize: 1, sync });
  const crews = [];
  for (const size of options.quick ? [10, 100] : [10, 100, 1_000]) {
    const [w] = await agentSteps({ steps: 30, windows: [5], crewSize: size, sync });
    crews.push({ agents: size, ...w! });
  }
  const first = conversation[0]!;
  const c10 = crews[0]!;
  return {
    sync,
    conversation: conversation.map((w) => ({ ...w, bytesRatio: round(w.bytesPerStep / first.bytesPerStep, 2), msRatio: round(w.msPerStep / first.msPerStep, 2) })),
    crews: crews.map((c) => ({ ...c, bytesRatio: round(c.bytesPerStep / c10.bytesPerStep, 2), msRatio: round(c.msPerStep / c10.msPerStep, 2) })),
    baseline: { rawLevel1KB: await rawLevel(sync, 2_000) },
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const quick = process.argv.includes('--quick');
  const sync = process.argv.includes('--sync');
  console.log(JSON.stringify({ machine: machineInfo(), persistence: await benchPersistence({ quick, sync }) }, null, 2));
}
