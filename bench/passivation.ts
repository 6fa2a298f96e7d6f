/**
 * Heap of a node holding many runs that wait for a human, unloaded (passivated) against
 * loaded: `runs` runs of a 10-agent crew whose first agent asks for approval, on LevelDB.
 * Baseline: the heap of the same node before any run.
 *
 * Then, with all of them unloaded, what a decision costs: `node.approve` of 20 of them, one
 * after another, each loading its run from storage (until the decision is durable in it),
 * and the approval records the node read for each (the run's own, through its index, or
 * every approval of the database). The runs decided before go on meanwhile (their other
 * agents work), so later decisions share the machine with them: the first ones take ~20 ms.
 *
 *   node --expose-gc --conditions=troupe-source --import tsx bench/passivation.ts [--quick]
 *
 * Prints one JSON object. Not a test: nothing is asserted.
 */
import { rm } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { agent, createNode, crew, scriptedModel, tool, type RunEvent, type TroupeNode } from '../index.js';
import type { KeyRange, Storage } from '../core/storage.js';
import { levelStorage } from '../storage/level.js';
import { machineInfo, round, summarize, tempDir } from './durable-step.js';

const gc = (globalThis as { gc?: () => void }).gc;
const heap = () => {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed;
};

const pay = tool({ name: 'pay', description: 'Pays.', input: z.object({ amount: z.number() }), effect: 'irreversible', scopes: ['money'], run: () => 'paid' });
const ids = Array.from({ length: 10 }, (_, i) => `a${i}`);
const team = crew({
  id: 'waiting',
  agents: ids.map((id, i) => agent({ id, role: id, instructions: 'Work.', model: 'scripted', ...(i === 0 ? { tools: [pay], policy: { ask: ['money'] } } : {}) })),
});
const script = Object.fromEntries(ids.map((id) => [id, [{ toolCalls: [{ name: 'pay', args: { amount: 1 } }] }, 'done']]));

/** `storage`, counting into `reads.records` every `approval:` value it hands out. */
function countingApprovals(storage: Storage, reads: { records: number }): Storage {
  return new Proxy(storage, {
    get(target, prop) {
      if (prop === 'get') return async (key: string) => (key.startsWith('approval:') && reads.records++, target.get(key));
      if (prop === 'entries')
        return async function* (range: KeyRange) {
          for await (const entry of target.entries(range)) {
            if (entry[0].startsWith('approval:')) reads.records++;
            yield entry;
          }
        };
      const value = Reflect.get(target, prop, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** Decides 20 waiting runs of `node`, one after another: ms per decision and approval records read per decision. */
async function decisions(node: TroupeNode, reads: { records: number }) {
  const pending = (await node.approvals({ status: 'pending' })).slice(0, 20);
  const ms: number[] = [];
  const before = reads.records;
  for (const approval of pending) {
    const t = performance.now();
    await node.approve(approval.id);
    ms.push(performance.now() - t);
  }
  return { decided: pending.length, ...summarize(ms), approvalRecordsReadPerDecision: round((reads.records - before) / pending.length, 1) };
}

export async function benchPassivation(options: { quick?: boolean } = {}) {
  const runs = options.quick ? 1_000 : 10_000;
  const results: Record<string, unknown> = { runs, agentsPerRun: ids.length, gcExposed: gc !== undefined };
  for (const passivate of [true, false]) {
    // Loaded, only a tenth as many: the point is the heap per run, not to exhaust the machine.
    const count = passivate ? runs : Math.min(runs, 1_000);
    const dir = await tempDir('passivate');
    const level = await levelStorage({ path: dir });
    // Counts the approval records read, by key prefix: `approval:` values, through either path.
    const approvalReads = { records: 0 };
    const storage = countingApprovals(level, approvalReads);
    const node = await createNode({ storage, models: { scripted: scriptedModel({ script }) }, passivateAfterMs: passivate ? 1 : 0 });
    const before = heap();
    let waiting = 0;
    let unloaded = 0;
    const allWaiting = new Promise<void>((resolve) =>
      node.subscribe((e: RunEvent) => {
        if (e.type === 'approval.requested' && ++waiting === count && !passivate) resolve();
        if (e.type === 'run.unloaded' && ++unloaded === count) resolve();
      }),
    );
    const started = performance.now();
    for (let i = 0; i < count; i++) await node.run(team, { input: 'pay', runId: `w${i}` });
    // The node's idle timers do not keep a process alive (a server or transport would).
    const keepAlive = setInterval(() => {}, 1_000);
    await allWaiting;
    clearInterval(keepAlive);
    const ms = performance.now() - started;
    const after = heap();
    results[passivate ? 'unloaded' : 'loaded'] = {
      runs: count,
      heapMiB: round((after - before) / 2 ** 20, 1),
      heapPerRunKiB: round((after - before) / count / 1024, 2),
      loadedRuns: node.loadedRuns().length,
      secondsToWait: round(ms / 1000, 1),
      ...(passivate ? { decision: await decisions(node, approvalReads) } : {}),
    };
    await node.close();
    await level.close();
    await rm(dir, { recursive: true, force: true });
  }
  return results;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  console.log(JSON.stringify({ machine: await machineInfo(), passivation: await benchPassivation({ quick: process.argv.includes('--quick') }) }, null, 2));
}
