import type { z } from 'zod';
import type { AnyStateMachine } from 'xstate';
import type { AgentDefinition } from './agent.js';
import { defineOutput, type OutputContract } from '../core/output-schema.js';
import { assertMigrations, type Migration } from '../core/migrations.js';
import type { Budget, RunnableDefinition } from '../core/runtime.js';
import { ROOT_ACTOR_ID } from '../core/run-host.js';
import { assertNodeId, NAME } from '../core/ids.js';
import { BLACKBOARD_ID } from './blackboard.js';
import { CONTROL_NAMES } from './controls.js';
import { definePolicy, type Policy } from '../core/policy.js';
import { createCrewMachine, createCrewPartMachine } from './crew-machine.js';
import { registerCrewProtocol } from './protocol.js';
import type { ChatLine, ProcessConfig, SpeakerSelector, TaskTemplate } from './processes.js';
import { resolveSupervision, type SupervisionPolicy } from './supervision.js';

/** How a crew's agents share the work. */
export type CrewProcess =
  | 'sequential'
  | { type: 'sequential'; taskTemplate?: TaskTemplate }
  /** A manager agent delegates tasks to the others (its `delegate` tool) and reviews the answers. */
  | { type: 'hierarchical'; manager: string }
  /** The `entry` agent starts; any agent may hand the conversation to another (its `handoff` tool). */
  | { type: 'handoff'; entry: string; maxHandoffs?: number; routes?: Record<string, readonly string[]> }
  /** Agents take turns on a shared transcript; a selector picks the next speaker. */
  | {
      type: 'groupChat';
      /** `roundRobin` (default), a function of the transcript, or `{ agent }`: an agent asked who speaks next. */
      selector?: 'roundRobin' | SpeakerSelector | { agent: string };
      /** Lines before the chat ends. Default 10. */
      maxRounds?: number;
      /** Ends the chat when a line contains this text, matches this pattern, or satisfies this test. */
      terminateOn?: string | RegExp | ((line: ChatLine) => boolean);
    };

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
  /** For `sequential`: what each agent is asked. */
  taskTemplate?: TaskTemplate;
  /** Upgrades persisted snapshots of older versions to `version` when a run resumes. */
  migrations?: readonly Migration[];
  /** How the crew restarts failing agents (agents may override it). */
  supervision?: Partial<SupervisionPolicy>;
  /** A shared blackboard (an `@xstate/store` child), with `read_blackboard`/`write_blackboard` tools for every agent. */
  blackboard?: boolean | { initial?: Record<string, unknown> };
  /** Limits for the whole run, enforced before each model call and persisted. */
  budget?: Budget;
  /**
   * Agents to run on other nodes, by node id (`{ writer: 'node-b' }`). Those nodes must
   * register this crew too; they host and persist their agents and resume them on restart.
   */
  placement?: Record<string, string>;
  /** Narrows every agent's tool permissions (an agent gets the stricter of both). */
  policy?: Policy;
  /**
   * The shape of the crew's final result, a zod schema of JSON values: a final answer that
   * does not fit fails the run with `OUTPUT_INVALID`, and `run.result()` gives the validated
   * value, typed by the schema. Give the agent that answers last the same schema as its
   * `output`, so it is shown the schema and corrects its answer before the crew sees it.
   *
   * @example
   * const brief = crew({ id: 'brief', agents: [extractor], output: Brief });
   * const run = await node.run(brief, { input: 'https://example.com/post' });
   * const { output } = await run.result(); // z.infer<typeof Brief>
   */
  output?: z.ZodType;
}

/**
 * A fully-defaulted crew definition. `T` is what `run.result()` gives as `output`: the value
 * of the crew's `output` schema, or the final answer's text without one.
 */
export interface CrewDefinition<T = string> extends RunnableDefinition {
  readonly kind: 'crew';
  readonly agents: readonly AgentDefinition[];
  readonly process: ProcessConfig;
  readonly migrations: readonly Migration[];
  readonly supervision: SupervisionPolicy;
  /** Per agent, its own policy or the crew's. */
  readonly supervisionOf: Readonly<Record<string, SupervisionPolicy>>;
  readonly blackboard: { initial: Record<string, unknown> } | null;
  readonly policy?: Policy;
  /** The schema of the final result, when it has one. */
  readonly output?: OutputContract<T>;
  /** Reads the final answer's text (what the run record keeps) into the value `run.result()` gives. */
  readonly parseOutput?: (text: string) => T;
}

// A node that knows crews refuses a crew message from a peer whose payload does not fit its
// schema (core/protocol.ts validatePayload); the kernel learns the crew's vocabulary here.
registerCrewProtocol();

/** The address of a crew's root actor inside its run (the kernel's root actor id). */
export const CREW_ACTOR_ID = ROOT_ACTOR_ID;

const defaultTemplate: TaskTemplate = ({ input, previous }) => (previous ? `${input}\n\nOutput of ${previous.agent}:\n${previous.output}` : input);

function resolveProcess(id: string, process: CrewProcess | undefined, ids: readonly string[], taskTemplate: TaskTemplate | undefined): ProcessConfig {
  const p = typeof process === 'string' ? { type: process } : (process ?? { type: 'sequential' as const });
  const known = (agent: string, what: string) => {
    if (!ids.includes(agent)) throw new TypeError(`crew "${id}": ${what} "${agent}" is not one of its agents (${ids.join(', ')})`);
  };
  switch (p.type) {
    case 'sequential':
      return { kind: 'sequential', taskTemplate: ('taskTemplate' in p && p.taskTemplate) || taskTemplate || defaultTemplate };
    case 'hierarchical':
      known(p.manager, 'manager');
      if (ids.length < 2) throw new TypeError(`crew "${id}": a hierarchical crew needs a manager and at least one worker`);
      return { kind: 'hierarchical', manager: p.manager };
    case 'handoff': {
      known(p.entry, 'entry agent');
      const routes = Object.fromEntries(ids.map((a) => [a, p.routes?.[a] ?? ids.filter((b) => b !== a)]));
      for (const [from, targets] of Object.entries(routes)) targets.forEach((t) => known(t, `handoff target of ${from}`));
      return { kind: 'handoff', entry: p.entry, maxHandoffs: p.maxHandoffs ?? 5, routes };
    }
    case 'groupChat': {
      const selector = p.selector ?? 'roundRobin';
      if (typeof selector === 'object') known(selector.agent, 'selector agent');
      const speakers = typeof selector === 'object' ? ids.filter((a) => a !== selector.agent) : [...ids];
      const t = p.terminateOn;
      const terminate =
        t === undefined ? () => false : typeof t === 'string' ? (l: ChatLine) => l.content.includes(t) : t instanceof RegExp ? (l: ChatLine) => t.test(l.content) : t;
      return { kind: 'groupChat', selector, maxRounds: p.maxRounds ?? 10, terminate, speakers };
    }
    default:
      throw new TypeError(`crew "${id}": unknown process "${(p as { type?: string }).type}"`);
  }
}

/**
 * Defines a crew. Throws a `TypeError` when the definition breaks a rule. With an `output`
 * schema, the definition (and so `run.result()`) is typed by it.
 *
 * @example
 * const Brief = z.object({ title: z.string(), points: z.array(z.string()) });
 * const briefing = crew({ id: 'briefing', agents: [agent({ id: 'extractor', role: 'Extracts', instructions: '…', model: 'ai', output: Brief })], output: Brief });
 * const { output } = await (await node.run(briefing, { input: post })).result(); // { title: string; points: string[] }
 */
export function crew<S extends z.ZodType>(options: CrewOptions & { output: S }): CrewDefinition<z.output<S>>;
export function crew(options: CrewOptions): CrewDefinition;
export function crew(options: CrewOptions): CrewDefinition<unknown> {
  if (!NAME.test(options?.id ?? '')) throw new TypeError(`crew id "${options?.id}" must match ${NAME}`);
  if (!options.agents?.length) throw new TypeError(`crew "${options.id}" needs at least one agent`);
  const ids: string[] = [];
  for (const a of options.agents) {
    if (a.id === CREW_ACTOR_ID || a.id === BLACKBOARD_ID) throw new TypeError(`agent id "${a.id}" is reserved for the crew's own actors`);
    if (ids.includes(a.id)) throw new TypeError(`crew "${options.id}" has two agents with id "${a.id}"`);
    const clash = a.tools.find((t) => CONTROL_NAMES.includes(t.name) || (options.blackboard && t.name.endsWith('_blackboard')));
    if (clash) throw new TypeError(`agent "${a.id}": tool name "${clash.name}" is reserved`);
    ids.push(a.id);
  }
  assertMigrations(`crew "${options.id}"`, options.migrations ?? []);
  for (const [agentId, node] of Object.entries(options.placement ?? {})) {
    if (!ids.includes(agentId)) throw new TypeError(`crew "${options.id}": placement names "${agentId}", which is not one of its agents`);
    assertNodeId(node, `crew "${options.id}": node id`);
  }
  const supervision = resolveSupervision(`crew "${options.id}"`, options.supervision);
  const bb = options.blackboard;
  const output = options.output === undefined ? undefined : defineOutput(`crew "${options.id}"`, options.output);
  const machines = new Map<string, AnyStateMachine>();
  const once = (key: string, build: () => AnyStateMachine) => {
    let machine = machines.get(key);
    if (!machine) machines.set(key, (machine = build()));
    return machine;
  };
  const def: CrewDefinition<unknown> = {
    kind: 'crew',
    id: options.id,
    agents: [...options.agents],
    actorIds: options.blackboard ? [...ids, BLACKBOARD_ID] : ids,
    modelRefs: Object.fromEntries(options.agents.map((a) => [a.id, a.model])),
    process: resolveProcess(options.id, options.process, ids, options.taskTemplate),
    version: options.version ?? '1',
    migrations: [...(options.migrations ?? [])],
    supervision,
    supervisionOf: Object.fromEntries(options.agents.map((a) => [a.id, resolveSupervision(`agent "${a.id}"`, a.supervision, supervision)])),
    blackboard: bb ? { initial: typeof bb === 'object' ? (bb.initial ?? {}) : {} } : null,
    budgets: {
      ...(options.budget ? { run: options.budget } : {}),
      agents: Object.fromEntries(options.agents.filter((a) => a.budget).map((a) => [a.id, a.budget!])),
    },
    ...(options.policy ? { policy: definePolicy(options.policy) } : {}),
    ...(options.placement && Object.keys(options.placement).length ? { placement: { ...options.placement } } : {}),
    ...(output ? { output, parseOutput: (text: string) => output.read(text) } : {}),
    // Built once for each set of agents a node hosts, and shared by all its runs: building
    // them was half a millisecond per agent at every start and every resume.
    createMachine: (_runtime, scope) => {
      const local = def.agents.filter((a) => scope?.isLocal(a.id) ?? true).map((a) => a.id);
      return once(`crew\n${local.join('\n')}`, () => createCrewMachine(def, local));
    },
    createPartMachine: (_runtime, actorIds) => once(`part\n${actorIds.join('\n')}`, () => createCrewPartMachine(def, actorIds)),
  };
  return def;
}
