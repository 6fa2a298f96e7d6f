import { enqueueActions, setup, type AnyActorLogic, type AnyStateMachine } from 'xstate';
import { parseAddress, type Envelope } from '../core/envelope.js';
import { ErrorCode, TroupeError, type SerializedError } from '../core/errors.js';
import { ROOT_ACTOR_ID } from '../core/run-host.js';
import { runtimeOf, type ActorRuntime } from '../core/runtime.js';
import type { Tool } from '../core/tool.js';
import { narrow, type Policy } from '../core/policy.js';
import { createAgentMachine, type AgentDefinition } from './agent.js';
import { BLACKBOARD_ID, blackboardTools, createBlackboardLogic } from './blackboard.js';
import { delegateTool, handoffTool, type ControlTool } from './controls.js';
import type { CrewDefinition } from './crew.js';
import { durableTimer } from './durable-timer.js';
import {
  CrewMessage,
  DelegatePayloadSchema,
  ENVELOPE_EVENT,
  FailurePayloadSchema,
  payloadOf,
  ResultPayloadSchema,
  SystemMessage,
  type EnvelopeEvent,
  type FailurePayload,
  type ResultPayload,
  type TaskPayload,
} from './protocol.js';
import { advanceProcess, initialProcessState, startProcess, type ChatLine, type Decision, type ProcessState } from './processes.js';
import { supervise, type FailureRecord } from './supervision.js';

/** Work the crew handed to an agent, and who is waiting for the answer. */
interface Assignment {
  agent: string;
  content: string;
  /** Passed on by a handoff: the most the agent may do for this task. */
  policy?: Policy;
  purpose: 'work' | 'select';
  /** `crew` for the process's own work; a manager's id for a delegation. */
  requester: string;
  requesterCorr?: string;
}

/** A restart waiting for its backoff deadline (stored, so it survives a restore). */
interface PendingRestart {
  deadline: number;
  kind: 'restart' | 'restartAll';
  assignment: Assignment;
}

/** The persisted context of a crew's root actor. */
export interface CrewContext {
  proc: ProcessState;
  assignments: Record<string, Assignment>;
  restarts: Record<string, number[]>;
  failures: FailureRecord[];
  pending: PendingRestart | null;
  result: { status: 'completed' | 'failed'; output: string; error: SerializedError | null } | null;
}

/** The final output of a crew run. */
export interface CrewOutput {
  status: 'completed' | 'failed';
  output: string;
  outputs: Record<string, string>;
  transcript: ChatLine[];
  failures: FailureRecord[];
  error: SerializedError | null;
}

type CrewEvent = EnvelopeEvent;
type Enqueue = { assign(update: Partial<CrewContext>): void } & ((fn: () => void) => void);

/** The agents' machines, with their control tools and the crew's shared tools, by `src` name. */
function agentLogic(def: CrewDefinition<unknown>): Record<string, AnyActorLogic> {
  const process = def.process;
  // Remote agents cannot reach the crew's blackboard, which lives with the crew root.
  const shared: Tool[] = def.blackboard && !def.placement ? blackboardTools() : [];
  const controlsOf = (id: string): ControlTool[] => {
    if (process.kind === 'hierarchical' && id === process.manager) return [delegateTool(def.agents.map((a) => a.id).filter((a) => a !== id))];
    if (process.kind === 'handoff' && process.routes[id]!.length > 0) return [handoffTool(process.routes[id]!)];
    return [];
  };
  // The crew narrows each agent's policy: an agent never gets more than the crew allows.
  const policyOf = (a: AgentDefinition): Policy | undefined => (def.policy && a.policy ? narrow(def.policy, a.policy) : (a.policy ?? def.policy));
  return Object.fromEntries(
    def.agents.map((a) => {
      const policy = policyOf(a);
      return [`agent:${a.id}`, createAgentMachine({ ...a, tools: [...a.tools, ...shared], ...(policy ? { policy } : {}) }, controlsOf(a.id))];
    }),
  );
}

/**
 * The root of a run part: hosts the agents a crew placed on this node, as children with
 * their own `systemId`, until the crew root (on its origin node) says the run ended.
 */
export function createCrewPartMachine(def: CrewDefinition<unknown>, actorIds: readonly string[]): AnyStateMachine {
  const actors = agentLogic(def);
  return setup({
    types: {} as { events: EnvelopeEvent },
    actors,
    guards: { isEnd: ({ event }) => event.envelope.type === SystemMessage.end },
  }).createMachine({
    id: `${def.id}-part`,
    invoke: actorIds.map((id) => ({ id, systemId: id, src: `agent:${id}` })) as never,
    initial: 'hosting',
    states: {
      hosting: { on: { [ENVELOPE_EVENT]: { guard: 'isEnd', target: 'ended' } } },
      ended: { type: 'final' },
    },
    output: () => ({ status: 'completed', output: '', error: null }),
  });
}

/**
 * Builds the root machine of `def`: a coordinator whose children are the agents (and the
 * blackboard), invoked with explicit `id` and `systemId`, so one deep persisted snapshot
 * holds the whole crew at a consistent point. What to do next comes from the pure process
 * functions; supervision decides on failures. It holds nothing of a run (its actions find
 * theirs with `runtimeOf(system)`): every run of `def` hosting the agents `localIds` here
 * shares it (the others are placed on other nodes).
 */
export function createCrewMachine(def: CrewDefinition<unknown>, localIds: readonly string[]): AnyStateMachine {
  const process = def.process;
  const actors = agentLogic(def);
  actors.durableTimer = durableTimer;
  if (def.blackboard) actors[BLACKBOARD_ID] = createBlackboardLogic(def.blackboard.initial);
  // Agents placed on other nodes are not children here: they are reached by envelope.
  const local = def.agents.filter((a) => localIds.includes(a.id));
  const invoke = [
    ...(def.blackboard ? [{ id: BLACKBOARD_ID, systemId: BLACKBOARD_ID, src: BLACKBOARD_ID }] : []),
    ...local.map((a) => ({ id: a.id, systemId: a.id, src: `agent:${a.id}` })),
  ];

  /** Hands work to an agent and remembers the assignment under a fresh correlation id. */
  const assign = (runtime: ActorRuntime, context: CrewContext, a: Assignment, enqueue: Enqueue): Record<string, Assignment> => {
    const corr = runtime.newId('task');
    const payload: TaskPayload = a.policy ? { content: a.content, policy: a.policy } : { content: a.content };
    enqueue(() => runtime.post(ROOT_ACTOR_ID, { to: a.agent, type: CrewMessage.task, payload, corr, replyTo: ROOT_ACTOR_ID }));
    return { ...context.assignments, [corr]: a };
  };

  /** Applies a process decision: more work, or the end of the run. */
  const apply = (runtime: ActorRuntime, context: CrewContext, proc: ProcessState, decision: Decision, enqueue: Enqueue) => {
    if (decision.type === 'dispatch') {
      const assignments = assign(runtime, context, { agent: decision.agent, content: decision.content, purpose: decision.purpose, requester: ROOT_ACTOR_ID, ...(decision.policy ? { policy: decision.policy } : {}) }, enqueue);
      enqueue.assign({ proc, assignments });
    } else if (decision.type === 'done') {
      // The result is checked here, where it is produced, so a run never completes with an
      // answer `run.result()` could not read; what is kept is the validated value's JSON.
      const checked = def.output?.check(decision.output);
      if (checked && !checked.ok) {
        const error = new TroupeError(ErrorCode.OUTPUT_INVALID, `crew "${def.id}": the final result does not fit its output schema: ${checked.problem}`, {
          details: { problem: checked.problem, output: decision.output.slice(0, 2_000) },
          retryable: false,
        }).toJSON();
        enqueue.assign({ proc, result: { status: 'failed', output: '', error } });
      } else enqueue.assign({ proc, result: { status: 'completed', output: checked?.ok ? checked.json : decision.output, error: null } });
    } else {
      enqueue.assign({ proc, result: { status: 'failed', output: '', error: decision.error } });
    }
  };

  const pick = (context: CrewContext, envelope: Envelope) => {
    const assignment = envelope.corr ? context.assignments[envelope.corr] : undefined;
    if (!assignment || parseAddress(envelope.from).actorId !== assignment.agent) return undefined;
    const { [envelope.corr!]: _done, ...rest } = context.assignments;
    return { assignment, rest };
  };

  return setup({
    types: {} as { context: CrewContext; events: CrewEvent; input: { input: string } },
    actors,
    guards: {
      isAssignmentReply: ({ context, event }) =>
        (event.envelope.type === CrewMessage.result || event.envelope.type === CrewMessage.failure) && pick(context, event.envelope) !== undefined,
      isDelegation: ({ event }) => event.envelope.type === CrewMessage.delegate,
      hasPending: ({ context }) => context.pending !== null,
      completed: ({ context }) => context.result?.status === 'completed',
      hasFailed: ({ context }) => context.result?.status === 'failed',
    },
    actions: {
      begin: enqueueActions(({ context, enqueue, system }) => apply(runtimeOf(system), context, context.proc, startProcess(process, def.agents, context.proc), enqueue as unknown as Enqueue)),

      onReply: enqueueActions(({ context, event, enqueue, system }) => {
        const runtime = runtimeOf(system);
        const q = enqueue as unknown as Enqueue;
        const { assignment, rest } = pick(context, event.envelope)!;
        const base = { ...context, assignments: rest };
        q.assign({ assignments: rest });
        const result = event.envelope.type === CrewMessage.result ? payloadOf(ResultPayloadSchema, event.envelope) : undefined;
        if (result) {
          const { output } = result;
          if (assignment.requester !== ROOT_ACTOR_ID) {
            const forward: ResultPayload = { output };
            q(() => runtime.post(ROOT_ACTOR_ID, { to: assignment.requester, type: CrewMessage.result, payload: forward, ...(assignment.requesterCorr ? { corr: assignment.requesterCorr } : {}) }));
            return;
          }
          const advanced = advanceProcess(process, def.agents, context.proc, {
            agent: assignment.agent,
            output,
            purpose: assignment.purpose,
            ...(result.handoff ? { handoff: result.handoff } : {}),
          });
          apply(runtime, base, advanced.state, advanced.decision, q);
          return;
        }
        // A failure, or an answer that does not follow the protocol (only a local sender can
        // deliver one: the node refuses it from a peer): the crew, as the agent's parent, supervises it.
        const error: SerializedError =
          event.envelope.type === CrewMessage.failure
            ? (payloadOf(FailurePayloadSchema, event.envelope)?.error ?? { name: 'Error', message: 'agent failed' })
            : new TroupeError(ErrorCode.INVALID_ENVELOPE, `${assignment.agent} answered with a malformed "${event.envelope.type}"`).toJSON();
        const policy = def.supervisionOf[assignment.agent] ?? def.supervision;
        const key = policy.strategy === 'oneForAll' ? '*' : assignment.agent;
        const now = runtime.clock.now();
        const decision = supervise(policy, error, context.restarts[key] ?? [], now, `${runtime.runId}/${assignment.agent}`);
        const failures = [...context.failures, { agent: assignment.agent, at: now, error, action: decision.action }];
        if (decision.action === 'escalate') {
          const escalated = new TroupeError(
            // Codes that say what to change keep their name: the crew adds nothing to fix.
            error.code === ErrorCode.BUDGET_EXCEEDED || error.code === ErrorCode.OUTPUT_INVALID ? error.code : ErrorCode.SUPERVISION_ESCALATED,
            `${assignment.agent} failed and was not restarted (${decision.reason}): ${error.message}`,
            { details: { agent: assignment.agent, cause: error } },
          ).toJSON();
          if (assignment.requester !== ROOT_ACTOR_ID) {
            // Escalate to the manager that asked: its model sees the failure as the tool's answer.
            const payload: FailurePayload = { error: escalated };
            q(() => runtime.post(ROOT_ACTOR_ID, { to: assignment.requester, type: CrewMessage.failure, payload, ...(assignment.requesterCorr ? { corr: assignment.requesterCorr } : {}) }));
            q.assign({ failures });
          } else {
            q.assign({ failures, result: { status: 'failed', output: '', error: escalated } });
          }
          return;
        }
        q.assign({
          failures,
          restarts: { ...context.restarts, [key]: decision.restarts },
          pending: { deadline: now + decision.delayMs, kind: decision.action, assignment },
        });
      }),

      onDelegation: enqueueActions(({ context, event, enqueue, system }) => {
        const runtime = runtimeOf(system);
        const q = enqueue as unknown as Enqueue;
        const from = parseAddress(event.envelope.from).actorId;
        const delegation = payloadOf(DelegatePayloadSchema, event.envelope);
        const agent = delegation?.agent;
        if (!delegation || agent === from || !def.agents.some((a) => a.id === agent)) {
          const payload: FailurePayload = { error: new TroupeError(ErrorCode.INVALID_DELEGATION, `cannot delegate to "${agent}"`).toJSON() };
          q(() => runtime.post(ROOT_ACTOR_ID, { to: from, type: CrewMessage.failure, payload, ...(event.envelope.corr ? { corr: event.envelope.corr } : {}) }));
          return;
        }
        const assignment: Assignment = { agent: delegation.agent, content: delegation.task, purpose: 'work', requester: from, ...(event.envelope.corr ? { requesterCorr: event.envelope.corr } : {}) };
        q.assign({ assignments: assign(runtime, context, assignment, q) });
      }),

      restart: enqueueActions(({ context, enqueue, system }) => {
        const runtime = runtimeOf(system);
        const q = enqueue as unknown as Enqueue;
        const pending = context.pending!;
        if (pending.kind === 'restart') {
          q.assign({ pending: null, assignments: assign(runtime, context, pending.assignment, q) });
          return;
        }
        // One for all: every agent back to a clean state, and the process from the start.
        for (const a of def.agents) q(() => runtime.post(ROOT_ACTOR_ID, { to: a.id, type: CrewMessage.reset, payload: {} }));
        const proc = initialProcessState(context.proc.input);
        const cleared = { ...context, assignments: {}, pending: null };
        q.assign({ pending: null, assignments: {} });
        apply(runtime, cleared, proc, startProcess(process, def.agents, proc), q);
      }),
    },
  }).createMachine({
    id: def.id,
    context: ({ input }) => ({ proc: initialProcessState(input.input), assignments: {}, restarts: {}, failures: [], pending: null, result: null }),
    invoke: invoke as never,
    initial: 'running',
    states: {
      running: {
        entry: 'begin',
        always: [
          { guard: 'completed', target: 'done' },
          { guard: 'hasFailed', target: 'failed' },
        ],
        on: {
          [ENVELOPE_EVENT]: [
            { guard: 'isAssignmentReply', actions: 'onReply' },
            { guard: 'isDelegation', actions: 'onDelegation' },
          ],
        },
        initial: 'active',
        states: {
          active: { always: { guard: 'hasPending', target: 'backingOff' } },
          backingOff: {
            invoke: { id: 'restartTimer', src: 'durableTimer', input: ({ context }) => ({ deadline: context.pending!.deadline }), onDone: { target: 'active', actions: 'restart' } },
          },
        },
      },
      done: { type: 'final' },
      failed: { type: 'final' },
    },
    output: ({ context }): CrewOutput => ({
      status: context.result?.status ?? 'failed',
      output: context.result?.output ?? '',
      outputs: context.proc.outputs,
      transcript: context.proc.transcript,
      failures: context.failures,
      error: context.result?.error ?? null,
    }),
  });
}
