/**
 * A crew spread over three processes: the planner and the crew root on node `a` (where the
 * run starts), the researcher on node `b`, the writer on node `c`. Each node persists the
 * actors it hosts; kill one and restart it on its directory and the crew still completes.
 *
 *   export TROUPE_SECRET=change-me-to-a-long-secret TROUPE_DISTRIBUTED=1
 *   npx troupe node --node-id b --listen 127.0.0.1:7401 --db .troupe/b --crew examples/distributed-crew.ts &
 *   npx troupe node --node-id c --listen 127.0.0.1:7402 --db .troupe/c --crew examples/distributed-crew.ts &
 *   npx troupe run examples/distributed-crew.ts --node-id a --db .troupe/a \
 *     --peer b=ws://127.0.0.1:7401 --peer c=ws://127.0.0.1:7402
 *
 * Without TROUPE_DISTRIBUTED the same crew runs in one process (the reference output).
 */
import { agent, crew, scriptedModel, type ScriptedTurn } from 'troupe';

const turns: Record<string, ScriptedTurn[]> = {
  planner: ['Plan: (1) research why actors suit agents, (2) write a two-sentence summary.'],
  researcher: ['Findings: actors isolate state; messages make distribution transparent; supervisors contain failures.'],
  writer: ['Summary: Agents built as actors keep their state private and talk only by messages, so a crew can spread over machines. Supervision and checkpoints let it survive the loss of any one of them.'],
};

/** Scripted, with latency so a node can be killed while it works. */
export const models = {
  scripted: scriptedModel({
    script: (request) => turns[request.agent]![request.messages.filter((m) => m.role === 'assistant').length]!,
    latencyMs: Number(process.env.TROUPE_SCRIPTED_LATENCY_MS ?? 150),
  }),
};

export const input = 'Summarise why agent runtimes should be actor systems.';

export default crew({
  id: 'distributed-crew',
  agents: [
    agent({ id: 'planner', role: 'Plans', instructions: 'Plan the work.', model: 'scripted' }),
    agent({ id: 'researcher', role: 'Researches', instructions: 'Research the plan.', model: 'scripted' }),
    agent({ id: 'writer', role: 'Writes', instructions: 'Write the summary.', model: 'scripted' }),
  ],
  ...(process.env.TROUPE_DISTRIBUTED ? { placement: { researcher: 'b', writer: 'c' } } : {}),
});
