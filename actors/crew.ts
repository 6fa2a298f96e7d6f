import { and, assign, setup, type AnyStateMachine } from 'xstate';
import { parseAddress, type Envelope } from '../core/envelope.js';
import type { SerializedError } from '../core/errors.js';
import { assertMigrations, type Migration } from '../core/migrations.js';
import type { ActorRuntime, RunnableDefinition } from '../core/runtime.js';
import { createAgentMachine, type AgentDefinition } from './agent.js';

/** How a crew's agents share the work. */
export type CrewProcess = 'sequential';

/** What the next agent of a sequential crew is asked, given the crew input and the previous output. */
export type TaskTemplate = (args: { input: string; previous: { agent: string; output: string } | null; agent: AgentDefinition }) => string;

/** Options of {@link crew}. */
export interface CrewOptions {
  /** Unique per node: `[A-Za-z][A-Za-z0-9_-]*`. */
  id: string;
  agents: readonly AgentDefinition[];
  /** Default `sequential`: each agent gets the previous agent's output as its task. */
  process?: CrewProcess;
  /**
   * Version of the crew's machines, recorded in every checkpoint. Bump it when a change
   * would make old snapshots mean something else. Default `1`.
   */
  version?: string;
  taskTemplate?: TaskTemplate;
  /** Upgrades persisted snapshots of older versions to `version` when a run resumes. */
  migrations?: readonly Migration[];
}

/** A fully-defaulted crew definition. */
export interface CrewDefinition extends RunnableDefinition {
  readonly kind: 'crew';
  readonly id: string;
  readonly agents: readonly AgentDefinition[];
  readonly process: CrewProcess;
  readonly version: string;
  readonly taskTemplate: TaskTemplate;
  readonly migrations: readonly Migration[];
}

/** The address of a crew's root actor inside its run. */
export const CREW_ACTOR_ID = 'crew';

const defaultTemplate: TaskTemplate = ({ input, previous }) =>
  previous ? `${input}\n\nOutput of ${previous.agent}:\n${previous.output}` : input;

/** Defines a crew. Throws a `TypeError` when the definition breaks a rule. */
export function crew(options: CrewOptions): CrewDefinition {
  if (!/^[A-Za-z][A-Za-z0-9_-]{0,63}$/.test(options?.id ?? '')) throw new TypeError(`crew id "${options?.id}" must match /^[A-Za-z][A-Za-z0-9_-]{0,63}$/`);
  if (!options.agents?.length) throw new TypeError(`crew "${options.id}" needs at least one agent`);
  const ids = new Set<string>();
  for (const a of options.agents) {
    if (a.id === CREW_ACTOR_ID) throw new TypeError(`agent id "${CREW_ACTOR_ID}" is reserved for the crew's root actor`);
    if (ids.has(a.id)) throw new TypeError(`crew "${options.id}" has two agents with id "${a.id}"`);
    ids.add(a.id);
  }
  assertMigrations(`crew "${options.id}"`, options.migrations ?? []);
  const process = options.process ?? 'sequential';
  if (process !== 'sequential') throw new TypeError(`crew "${options.id}": unknown process "${process as string}"`);
  const def: CrewDefinition = {
    kind: 'crew',
    id: options.id,
    agents: [...options.agents],
    actorIds: options.agents.map((a) => a.id),
    process,
    version: options.version ?? '1',
    taskTemplate: options.taskTemplate ?? defaultTemplate,
    migrations: [...(options.migrations ?? [])],
    createMachine: (runtime) => createCrewMachine(def, runtime),
  };
  return def;
}

/** The persisted context of a sequential crew's root actor. */
export interface CrewContext {
  input: string;
  index: number;
  corr: string;
  outputs: Record<string, string>;
  error: SerializedError | null;
}

/** The final output of a crew run. */
export interface CrewOutput {
  status: 'completed' | 'failed';
  output: string;
  outputs: Record<string, string>;
  error: SerializedError | null;
}

/**
 * Builds the root machine of one run of `def`: a coordinator whose children are the
 * agents, invoked with explicit `id` and `systemId`, so one deep persisted snapshot holds
 * the whole crew at a consistent point.
 */
export function createCrewMachine(def: CrewDefinition, runtime: ActorRuntime): AnyStateMachine {
  const order = def.agents.map((a) => a.id);
  const agentLogic = Object.fromEntries(def.agents.map((a) => [`agent:${a.id}`, createAgentMachine(a, runtime)]));

  const isReplyFor = (context: CrewContext, envelope: Envelope, type: string) =>
    envelope.type === type && envelope.corr === context.corr && parseAddress(envelope.from).actorId === order[context.index];

  const dispatch = (context: CrewContext) => {
    const agentDef = def.agents[context.index]!;
    const prevId = context.index > 0 ? order[context.index - 1]! : undefined;
    const previous = prevId ? { agent: prevId, output: context.outputs[prevId] ?? '' } : null;
    runtime.post(CREW_ACTOR_ID, {
      to: agentDef.id,
      type: 'task',
      payload: { content: def.taskTemplate({ input: context.input, previous, agent: agentDef }) },
      corr: context.corr,
      replyTo: CREW_ACTOR_ID,
    });
  };

  return setup({
    types: {} as { context: CrewContext; events: { type: 'troupe.envelope'; envelope: Envelope }; input: { input: string } },
    actors: agentLogic,
    guards: {
      resultFromCurrent: ({ context, event }) => isReplyFor(context, event.envelope, 'result'),
      failureFromCurrent: ({ context, event }) => isReplyFor(context, event.envelope, 'failure'),
      isLast: ({ context }) => context.index === order.length - 1,
    },
    actions: {
      dispatch: ({ context }) => dispatch(context),
      recordOutput: assign(({ context, event }) => {
        const output = (event.envelope.payload as { output?: unknown })?.output;
        return { outputs: { ...context.outputs, [order[context.index]!]: typeof output === 'string' ? output : JSON.stringify(output) } };
      }),
      advance: assign(({ context }) => ({ index: context.index + 1, corr: runtime.newId('task') })),
      recordFailure: assign(({ event }) => ({ error: (event.envelope.payload as { error?: SerializedError })?.error ?? { name: 'Error', message: 'agent failed' } })),
    },
  }).createMachine({
    id: def.id,
    context: ({ input }) => ({ input: input.input, index: 0, corr: runtime.newId('task'), outputs: {}, error: null }),
    invoke: def.agents.map((a) => ({ id: a.id, systemId: a.id, src: `agent:${a.id}` })) as never,
    initial: 'working',
    states: {
      working: {
        entry: 'dispatch',
        on: {
          'troupe.envelope': [
            { guard: and(['resultFromCurrent', 'isLast']), target: 'done', actions: 'recordOutput' },
            { guard: 'resultFromCurrent', actions: ['recordOutput', 'advance', 'dispatch'] },
            { guard: 'failureFromCurrent', target: 'failed', actions: 'recordFailure' },
          ],
        },
      },
      done: { type: 'final' },
      failed: { type: 'final' },
    },
    output: ({ context }): CrewOutput => {
      const last = order[order.length - 1]!;
      const failed = context.error !== null;
      return {
        status: failed ? 'failed' : 'completed',
        output: failed ? '' : (context.outputs[last] ?? ''),
        outputs: context.outputs,
        error: context.error,
      };
    },
  });
}
