/**
 * Heap of a node holding many runs that wait for a human, unloaded (passivated) against
 * loaded: `runs` runs of a 10-agent crew whose first agent asks for approval, on LevelDB.
 * Baseline: the heap of the same node before any run.
 *
 *   node --expose-gc --conditions=troupe-source --import tsx bench/passivation.ts [--quick]
 *
 * Prints one JSON object. Not a test: nothing is asserted.
 */
import { rm } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { agent, createNode, crew, scriptedModel, tool, type RunEvent } from '../index.js';
import { levelStorage } from '../storage/level.js';
import { machineInfo, round, tempDir } from './durable-step.js';

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

export async function benchPassivation(options: { quick?: boolean } = {}) {
  const runs = options.quick ? 1_000 : 10_000;
  const results: Record<string, unknown> = { runs, agentsPerRun: ids.length, gcExposed: gc !== undefined };
  for (const passivate of [true, false]) {
    // Loaded, only a tenth as many: the point is the heap per run, not to exhaust the machine.
    const count = passivate ? runs : Math.min(runs, 1_000);
    const dir = await tempDir('passivate');
    const storage = await levelStorage({ path: dir });
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
    };
    await node.close();
    await storage.close();
    await rm(dir, { recursive: true, force: true });
  }
  return results;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  console.log(JSON.stringify({ machine: await machineInfo(), passivation: await benchPassivation({ quick: process.argv.includes('--quick') }) }, null, 2));
}
