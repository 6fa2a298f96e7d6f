/**
 * Replay speed: recorded steps per second when a 1,000-step run is replayed against its own
 * code (every model and tool call served from the recording, conversations compared by
 * digest), next to its baseline measured in the same process run: executing the same run live
 * (scripted model without latency, a real no-op tool, checkpoints on LevelDB).
 *
 * One agent of {@link loopCrew} takes `STEPS` model steps, each with one tool call, on a fresh
 * LevelDB; then the run is replayed from that database (read only; the replay executes in an
 * in-memory scratch node). A step is one model call and its tool call. One unmeasured warm-up
 * pair of a short run comes first.
 *
 *   npx tsx bench/replay.ts [--quick]
 *
 * Prints one JSON object. Not a test: nothing is asserted.
 */
import { rm } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { createNode } from '../index.js';
import { levelStorage } from '../storage/level.js';
import { machineInfo, round, tempDir } from './durable-step.js';
import { loopCrew, loopModel } from './persistence.js';

/** Executes a `steps`-step run live, then replays it; the time of each and whether the replay was clean. */
async function liveThenReplay(steps: number) {
  const dir = await tempDir('replay');
  const def = loopCrew('replay', 1, steps + 5);
  try {
    await using storage = await levelStorage({ path: dir });
    await using node = await createNode({ storage, models: { loop: loopModel(steps) }, resume: false, auditDir: false });
    const t0 = performance.now();
    const run = await node.run(def, { input: 'go', runId: 'r' });
    await run.result();
    const liveMs = performance.now() - t0;
    const t1 = performance.now();
    const report = await node.replay('r', { crew: def });
    const replayMs = performance.now() - t1;
    if (!report.clean) throw new Error(`the replay diverged: ${JSON.stringify(report.divergences[0])}`);
    return { liveMs, replayMs, served: report.calls.served };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The benchmark: live and replayed steps per second of one run of `steps` steps. */
export async function benchReplay(steps = 1000) {
  await liveThenReplay(20);
  const { liveMs, replayMs, served } = await liveThenReplay(steps);
  return {
    steps,
    callsServed: served,
    live: { ms: round(liveMs), stepsPerSecond: round((steps / liveMs) * 1000) },
    replay: { ms: round(replayMs), stepsPerSecond: round((steps / replayMs) * 1000) },
    replayVsLive: round(liveMs / replayMs),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const steps = process.argv.includes('--quick') ? 200 : 1000;
  process.stdout.write(`${JSON.stringify({ machine: await machineInfo(), replay: await benchReplay(steps) }, null, 2)}\n`);
}
