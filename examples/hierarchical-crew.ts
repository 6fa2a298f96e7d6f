/**
 * An editorial team: a lead delegates research and writing, reviews the draft and asks for
 * one revision. The researcher leaves its findings on the crew's shared blackboard for the
 * writer. Runs offline on the scripted model (`npm start` runs this crew with a live view):
 *
 *   npx troupe run examples/hierarchical-crew.ts
 */
import { z } from 'zod';
import { agent, crew, scriptedModel, tool, type ScriptedTurn } from 'troupe';
import { demoModels } from './demo-models.js';

const library: Record<string, string> = {
  'actor model': 'Actors own private state and communicate only by asynchronous messages (Hewitt, 1973).',
  supervision: 'Erlang supervisors restart failing children one-for-one or one-for-all, within a restart intensity.',
  'durable execution': 'Durable execution checkpoints each step so a workflow resumes after a crash where it stopped.',
};

const search = tool({
  name: 'search',
  description: 'Looks a topic up in the offline library.',
  input: z.object({ topic: z.string() }),
  effect: 'read',
  run: ({ topic }) => library[topic.toLowerCase()] ?? `nothing on "${topic}"`,
});

const draft1 = 'Agents are actors: they keep state and talk by messages. Crews supervise them. Runs are durable.';
const draft2 =
  'An agent runtime should be an actor system: each agent owns its state and speaks only through messages, a supervisor restarts it when it fails, and every step is checkpointed so a crew survives a crash.';

/**
 * Each agent's turns in the run, played in order: the writer's second task (the revision)
 * gets its third turn, the revised draft.
 */
const script: Record<string, ScriptedTurn[]> = {
  lead: [
    { text: 'First, facts.', toolCalls: [{ name: 'delegate', args: { agent: 'researcher', task: 'Find facts on actors, supervision and durable execution; put them on the blackboard.' } }] },
    { text: 'Now a draft.', toolCalls: [{ name: 'delegate', args: { agent: 'writer', task: 'Write a one-sentence thesis from the findings on the blackboard.' } }] },
    { text: 'Too terse. Revise.', toolCalls: [{ name: 'delegate', args: { agent: 'writer', task: 'Revise: one flowing sentence that names state, messages, supervision and checkpoints.' } }] },
    `Approved. Final thesis: ${draft2}`,
  ],
  researcher: [
    { text: 'Searching.', toolCalls: [{ name: 'search', args: { topic: 'actor model' } }, { name: 'search', args: { topic: 'supervision' } }, { name: 'search', args: { topic: 'durable execution' } }] },
    { text: 'Recording findings.', toolCalls: [{ name: 'write_blackboard', args: { key: 'findings', value: ['actors own state, talk by messages', 'supervisors restart children', 'checkpoints make runs durable'] } }] },
    'Findings are on the blackboard under "findings".',
  ],
  writer: [
    { text: 'Reading the findings.', toolCalls: [{ name: 'read_blackboard', args: { key: 'findings' } }] },
    draft1,
    draft2,
  ],
};

/** Scripted, with latency so the live view has something to show. */
const scripted = scriptedModel({ script, latencyMs: Number(process.env.TROUPE_SCRIPTED_LATENCY_MS ?? 250) });
/** `TROUPE_MODEL=openai:gpt-4o-mini` (or `anthropic:claude-…`) runs the crew on a real model. */
export const models = demoModels(scripted, ['lead', 'researcher', 'writer']);

export const input = 'Write the thesis of Troupe in one sentence.';

export default crew({
  id: 'editorial-team',
  process: { type: 'hierarchical', manager: 'lead' },
  blackboard: true,
  supervision: { strategy: 'oneForOne', maxRestarts: 2, withinMs: 60_000 },
  budget: { maxSteps: 30 },
  agents: [
    agent({ id: 'lead', role: 'Plans, delegates, reviews', instructions: 'Delegate research and writing; review and request revisions.', model: 'router:lead' }),
    agent({ id: 'researcher', role: 'Finds facts', instructions: 'Search, then leave findings on the blackboard.', model: 'router:researcher', tools: [search] }),
    agent({ id: 'writer', role: 'Drafts and revises', instructions: 'Write from the findings on the blackboard.', model: 'router:writer' }),
  ],
});
