import type { ActorSystem, AnyActor, AnyStateMachine } from 'xstate';
import type { SerializedError } from './errors.js';
import type { Migration } from './migrations.js';
import type { Policy } from './policy.js';
import type { ApprovalRequest, RecordedDecision } from './approvals.js';
import type { Clock } from './clock.js';
import type { Address } from './envelope.js';
import type { Message, ToolCall, ToolMessage } from './messages.js';
import type { ModelResponse } from './model.js';
import type { ModelSettings } from './model-settings.js';
import type { Tool } from './tool.js';

/** A message an actor sends; the runtime stamps id, sender, sequence number and time. */
export interface OutgoingMessage {
  /** An actor id inside the same run, or a full address. */
  to: Address;
  type: string;
  payload: unknown;
  corr?: string;
  replyTo?: Address;
}

/** One model step of an agent. */
export interface ModelStep {
  model: string;
  /** Which task of the agent this is (1-based); with `step` it names the call uniquely. */
  task: number;
  step: number;
  /** 0 on the first attempt of the step; retries from `recovering` count up. */
  attempt: number;
  /** Model answers of the agent's earlier completed tasks (see `ModelRequest.priorTurns`). */
  priorTurns?: number;
  messages: readonly Message[];
  tools: readonly Tool[];
  /** The agent's call settings, handed to the provider with every call. */
  settings?: ModelSettings;
}

/** One tool call of an agent. */
export interface ToolStep {
  task: number;
  step: number;
  call: ToolCall;
  tools: readonly Tool[];
  /** Human decisions of this task, by call id. */
  decisions: Readonly<Record<string, RecordedDecision>>;
  /**
   * Earlier tasks of this agent that failed or were reset. Effects they recorded are owed
   * to this attempt: a call of the same tool with the same arguments reuses the recorded
   * outcome instead of touching the world again (see `core/effect-inheritance.ts`).
   */
  inherits?: readonly number[];
  /** The agent's effective permission policy for this task (none: all tools allowed). */
  policy?: Policy | undefined;
}

/**
 * What the kernel offers the machines of one run. Machines are built per run with this in
 * their closures, so their logic stays named in `setup` (persistable) while side effects go
 * through the node: journaled, checkpointed and replayed on resume.
 */
export interface ActorRuntime {
  readonly runId: string;
  readonly clock: Clock;
  newId(prefix: string): string;
  /** Enqueues a message; it is delivered after the current macrostep and persisted with it. */
  post(from: string, message: OutgoingMessage): void;
  /** Calls a model, or returns the recorded response when this step already ran. */
  callModel(agentId: string, step: ModelStep, signal: AbortSignal): Promise<ModelResponse>;
  /** Runs a tool under the effect ledger; tool failures come back as error messages. */
  runTool(agentId: string, step: ToolStep, signal: AbortSignal): Promise<ToolMessage>;
  /** Records that `agentId` now waits for a human on `request` (persisted, listed, announced). */
  requestApproval(agentId: string, request: ApprovalRequest): void;
}

/** Which actors of a run the building node hosts. */
export interface MachineScope {
  isLocal(actorId: string): boolean;
}

/** Limits on model use. Each is checked (and one step reserved) before every model call. */
export interface Budget {
  maxSteps?: number;
  maxTokens?: number;
  /** US dollars, from providers that report cost. */
  maxCost?: number;
}

/** The output contract of a run's root machine. */
export interface RunOutput {
  status: 'completed' | 'failed';
  output: string;
  error: SerializedError | null;
}

/**
 * A definition whose run ends in a typed value (a crew with an `output` schema):
 * `parseOutput` reads the final answer's text, which the run record keeps, into the value
 * `run.result()` gives, throwing `OUTPUT_INVALID` when it does not fit. Read again on every
 * `result()`, so a resumed or reloaded run yields the same value.
 */
export interface TypedOutput<T> {
  readonly parseOutput?: (text: string) => T;
}

// xstate exports the generic type only: the system of any actor.
type AnyActorSystem = ActorSystem<any>;

/**
 * The runtime of each run, by the actor system of its root actor (children share it), and
 * the runtime of the root actor being constructed: XState computes an actor's initial state
 * in its constructor, before the system can be bound. One registry per process, not per
 * module instance: a crew module may import another copy of Troupe than the node running
 * it (a crew directory with its own install, sources beside the built package).
 */
const REGISTRY = Symbol.for('troupe.runtime-registry.v1');
const registry: { runtimes: WeakMap<AnyActorSystem, ActorRuntime>; constructing: ActorRuntime | undefined } = ((globalThis as Record<symbol, unknown>)[REGISTRY] as never) ??
  ((globalThis as Record<symbol, unknown>)[REGISTRY] = { runtimes: new WeakMap(), constructing: undefined });

/**
 * Creates a run's root actor with `create` (a synchronous `createActor(...)`) and binds
 * `runtime` to its actor system, so a machine built once and shared by many runs (a crew
 * builds its machines once, not per run) reaches the run it acts in with {@link runtimeOf}.
 */
export function createBoundActor<T extends AnyActor>(runtime: ActorRuntime, create: () => T): T {
  if (registry.constructing) throw new TypeError('createBoundActor cannot nest: one run root is constructed at a time');
  registry.constructing = runtime;
  try {
    const actor = create();
    registry.runtimes.set(actor.system, runtime);
    return actor;
  } finally {
    registry.constructing = undefined;
  }
}

/**
 * The runtime of the run an action or actor of a Troupe machine runs in, from the `system`
 * XState passes to every action, guard and actor creator.
 */
export function runtimeOf(system: AnyActorSystem): ActorRuntime {
  const runtime = registry.runtimes.get(system) ?? registry.constructing;
  if (!runtime) throw new TypeError('this machine acts outside a Troupe run: its actor system has no runtime (a node creates run roots with createBoundActor)');
  return runtime;
}

/**
 * Anything a node can run: a crew, or any root machine that follows the runtime contract
 * (its children are addressable by `systemId`, its final output is a {@link RunOutput}).
 */
export interface RunnableDefinition {
  readonly id: string;
  /** Recorded in every checkpoint; a snapshot of another version needs a migration. */
  readonly version: string;
  /** Ids of the actors inside a run (besides the root), for progress and inspection. */
  readonly actorIds: readonly string[];
  /** Upgrades for snapshots written by older versions, oldest first. */
  readonly migrations?: readonly Migration[];
  /** Limits for the run and per actor, enforced by the node before each model call. */
  readonly budgets?: { run?: Budget; agents?: Readonly<Record<string, Budget>> };
  /**
   * The model reference (`provider:model`) of each actor that calls a model, by actor id.
   * The node checks them against its providers before a run starts or resumes.
   */
  readonly modelRefs?: Readonly<Record<string, string>>;
  /** Actors that run on other nodes, by node id; the rest run where the run started. */
  readonly placement?: Readonly<Record<string, string>>;
  /**
   * The run's root machine. `scope.isLocal(actorId)` says which actors this node hosts; the
   * others are reached by envelope through the node's transport. The machine may be one
   * built once and returned for every run (a crew's is): its actions then find the run's
   * runtime with {@link runtimeOf}`(system)` rather than closing over `runtime`.
   */
  createMachine(runtime: ActorRuntime, scope?: MachineScope): AnyStateMachine;
  /** A machine hosting just `actorIds` on a remote node (a run part). */
  createPartMachine?(runtime: ActorRuntime, actorIds: readonly string[]): AnyStateMachine;
}
