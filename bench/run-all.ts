/**
 * Runs every benchmark in one process and prints one JSON document:
 *
 *   npm run bench [-- --quick]
 *
 * `durableStep`: the cost of one checkpointed agent step next to raw XState and raw LevelDB
 * (bench/durable-step.ts). `resume`: cold-resume time next to opening the database and reading
 * its latest checkpoint (bench/resume-time.ts). Every figure is measured in the same process
 * as its baseline. Not a test: nothing is asserted.
 */
import { benchDurableStep, machineInfo, quickDurableStep, round } from './durable-step.js';
import { benchResume } from './resume-time.js';

const quick = process.argv.includes('--quick');
const started = performance.now();
const durableStep = await benchDurableStep(quick ? quickDurableStep : {});
const resume = await benchResume(quick ? { k: 20, trials: 3 } : {});
const report = {
  machine: await machineInfo(),
  ...(quick ? { quick: true } : {}),
  durableStep,
  resume,
  totalSeconds: round((performance.now() - started) / 1000),
};
console.log(JSON.stringify(report, null, 2));
