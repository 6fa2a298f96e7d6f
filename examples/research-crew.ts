/**
 * A two-agent research crew: a researcher gathers facts with a search tool, a writer
 * turns them into a short brief. Runs offline on the scripted model:
 *
 *   npx troupe run examples/research-crew.ts
 */
import { z } from 'zod';
import { agent, crew, scriptedModel, tool } from 'troupe';
import { demoModels } from './demo-models.js';

const corpus: Record<string, string> = {
  'actor model': 'The actor model (Hewitt, 1973) treats actors as the unit of computation: they hold private state, process one message at a time and communicate only by messages.',
  statecharts: 'Statecharts (Harel, 1987) extend state machines with hierarchy, parallel regions and history; XState implements them for JavaScript.',
  'durable execution': 'Durable execution persists every step of a workflow so it resumes after a crash exactly where it stopped (Temporal, Azure Durable Functions).',
};

const search = tool({
  name: 'search',
  description: 'Looks up a topic in the offline encyclopedia.',
  input: z.object({ topic: z.string().min(1) }),
  effect: 'read',
  scopes: ['kb:read'],
  run: ({ topic }) => corpus[topic.toLowerCase()] ?? `No entry for "${topic}".`,
});

const countWords = tool({
  name: 'count_words',
  description: 'Counts the words of a draft.',
  input: z.object({ text: z.string() }),
  effect: 'read',
  run: ({ text }) => ({ words: text.split(/\s+/).filter(Boolean).length }),
});

const draft =
  'Troupe combines three ideas. Actors keep private state and talk by messages; statecharts make each actor\'s behaviour explicit; durable execution checkpoints every step so a crew resumes after a crash.';

/** Turns per agent, played in order across its tasks (counted from the checkpointed conversation). */
const script = {
  researcher: [
    { text: 'I will look up the actor model first.', toolCalls: [{ name: 'search', args: { topic: 'actor model' } }] },
    { text: 'Now statecharts.', toolCalls: [{ name: 'search', args: { topic: 'statecharts' } }] },
    { text: 'And durable execution.', toolCalls: [{ name: 'search', args: { topic: 'durable execution' } }] },
    'Findings: (1) actors hold private state and communicate only by messages; (2) statecharts add hierarchy and parallelism to state machines; (3) durable execution persists each step so work resumes after a crash.',
  ],
  writer: [
    { text: 'Let me check the length of my draft.', toolCalls: [{ name: 'count_words', args: { text: draft } }] },
    `Brief: ${draft}`,
  ],
};

const scripted = scriptedModel({ script, latencyMs: Number(process.env.TROUPE_SCRIPTED_LATENCY_MS ?? 120) });
/** `TROUPE_MODEL=openai:gpt-4o-mini` (or `anthropic:claude-…`) runs the crew on a real model. */
export const models = demoModels(scripted, ['researcher', 'writer']);

/** The task used when `troupe run` is given no `--input`. */
export const input = 'Write a three-sentence brief on why agent runtimes should be actor systems.';

export default crew({
  id: 'research-crew',
  agents: [
    agent({
      id: 'researcher',
      role: 'Finds facts',
      instructions: 'You research the task with the search tool and report numbered findings.',
      model: 'router:researcher',
      tools: [search],
    }),
    agent({
      id: 'writer',
      role: 'Writes the brief',
      instructions: 'You turn findings into a brief of three sentences.',
      model: 'router:writer',
      tools: [countWords],
    }),
  ],
});
