import { z } from 'zod';
// Through the package name, not a relative path: crew modules the CLI loads (test/fixtures)
// build on these too, and must see the same Troupe the CLI is (dist/ for the compiled one).
import { agent, crew, tool, type AgentOptions, type CrewOptions, type Script } from 'troupe';

/** {@link twoAgentCrew} with its writer placed on node `b`: the crew of the cross-node tests. */
export const placedCrew = () => twoAgentCrew({ crew: { placement: { writer: 'b' } } });

/** Two agents handing work along: `researcher` (uses `lookup`) then `writer`. */
export function twoAgentCrew(
  options: { id?: string; researcher?: Partial<AgentOptions>; writer?: Partial<AgentOptions>; calls?: string[]; crew?: Partial<CrewOptions>; define?: (word: string) => string } = {},
) {
  const lookup = tool({
    name: 'lookup',
    description: 'Looks a word up.',
    input: z.object({ word: z.string() }),
    effect: 'read',
    run: ({ word }) => {
      options.calls?.push(word);
      return options.define ? options.define(word) : `${word}: a definition`;
    },
  });
  return crew({
    id: options.id ?? 'pair',
    // No restarts unless a test asks: failures surface as they are.
    supervision: { maxRestarts: 0 },
    ...options.crew,
    agents: [
      agent({ id: 'researcher', role: 'researches', instructions: 'Research.', model: 'scripted', tools: [lookup], retry: { initialDelayMs: 1 }, ...options.researcher }),
      agent({ id: 'writer', role: 'writes', instructions: 'Write.', model: 'scripted', retry: { initialDelayMs: 1 }, ...options.writer }),
    ],
  });
}

/** A script for {@link twoAgentCrew}: two lookups, findings, then the writer's answer. */
export const pairScript: Script = {
  researcher: [
    { text: 'looking up actors', toolCalls: [{ name: 'lookup', args: { word: 'actor' } }] },
    { text: 'looking up states', toolCalls: [{ name: 'lookup', args: { word: 'state' } }] },
    'findings: actor, state',
  ],
  writer: ['final: a brief about actor and state'],
};
