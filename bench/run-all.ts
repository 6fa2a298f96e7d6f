/**
 * Runs every benchmark in one process and prints one JSON document:
 *
 *   npm run bench [-- [--quick] [--only messaging,transport]]
 *
 * - `messaging`: two actors of one run bouncing envelopes, and `node.tell`, next to raw
 *   XState `sendTo` (bench/messaging.ts);
 * - `transport`: cross-process throughput and round trips through the WebSocket transport,
 *   next to raw `ws` + msgpackr (bench/transport.ts, peer in bench/transport-peer.ts);
 * - `durableStep`: one checkpointed agent step next to raw XState and raw LevelDB
 *   (bench/durable-step.ts);
 * - `groupCommit`: 1/10/50 parallel runs on one LevelDB node, and journal replay, next to raw
 *   LevelDB writes and iteration (bench/storage.ts);
 * - `resume`: cold-resume time of a run holding 5,000 messages next to opening the database
 *   and reading one key, and of a 1-agent and a 10-agent crew next to opening the database
 *   and reading its latest checkpoint (bench/resume-time.ts);
 * - `persistence` / `persistenceSync`: bytes and ms per agent step at 100, 1,000 and 5,000
 *   messages of one agent's conversation, and in crews of 10, 100 and 1,000 agents where one
 *   works, as ratios to the smallest case; sync off / fsync (bench/persistence.ts);
 * - `langgraph`: the same scripted agent loop on LangGraph.js + SqliteSaver
 *   (bench/langgraph.ts; skipped with a note when the dev packages are missing);
 * - `memory`: heap per idle agent and agents per GiB, in `--expose-gc` child processes
 *   (bench/memory.ts);
 * - `replay`: recorded steps per second replaying a 1,000-step run against its own code,
 *   next to executing the same run live (bench/replay.ts).
 *
 * Every figure is measured in the same process run as its baseline (the memory and
 * transport sections start child processes of their own). A section that throws is reported
 * as `{ error }` and the others still run. Not a test: nothing is asserted.
 */
import { benchDurableStep, machineInfo, quickDurableStep, round } from './durable-step.js';
import { benchLangGraph, quickLangGraph } from './langgraph.js';
import { benchMemory, quickMemory } from './memory.js';
import { benchMessaging, quickMessaging } from './messaging.js';
import { benchPassivation } from './passivation.js';
import { benchPersistence, quickPersistence } from './persistence.js';
import { benchResume, quickResume } from './resume-time.js';
import { benchReplay } from './replay.js';
import { benchStorage, quickStorage } from './storage.js';
import { benchTransport, quickTransport } from './transport.js';

const quick = process.argv.includes('--quick');
const onlyAt = process.argv.indexOf('--only');
const only = onlyAt === -1 ? undefined : new Set((process.argv[onlyAt + 1] ?? '').split(','));

const sections: Array<[string, () => Promise<unknown>]> = [
  ['messaging', () => benchMessaging(quick ? quickMessaging : {})],
  ['transport', () => benchTransport(quick ? quickTransport : {})],
  ['durableStep', () => benchDurableStep(quick ? quickDurableStep : {})],
  ['groupCommit', () => benchStorage(quick ? quickStorage : {})],
  ['resume', () => benchResume(quick ? quickResume : {})],
  ['persistence', () => benchPersistence({ ...(quick ? quickPersistence : {}), sync: false })],
  ['persistenceSync', () => benchPersistence({ ...(quick ? quickPersistence : {}), sync: true })],
  ['langgraph', () => benchLangGraph(quick ? quickLangGraph : {})],
  ['memory', () => benchMemory(quick ? quickMemory : {})],
  ['passivation', () => benchPassivation({ quick })],
  ['replay', () => benchReplay(quick ? 200 : 1000)],
];

const started = performance.now();
const report: Record<string, unknown> = { machine: await machineInfo(), ...(quick ? { quick: true } : {}) };
const seconds: Record<string, number> = {};
for (const [name, run] of sections) {
  if (only && !only.has(name)) continue;
  const t = performance.now();
  try {
    report[name] = await run();
  } catch (error) {
    report[name] = { error: (error as Error)?.stack ?? String(error) };
  }
  seconds[name] = round((performance.now() - t) / 1000);
  // Progress on stderr; stdout stays one JSON document.
  process.stderr.write(`bench: ${name} done in ${seconds[name]} s\n`);
}
report.sectionSeconds = seconds;
report.totalSeconds = round((performance.now() - started) / 1000);
console.log(JSON.stringify(report, null, 2));
