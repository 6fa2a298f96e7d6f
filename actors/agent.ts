import { assign, fromPromise, setup, type ActorRefFrom } from 'xstate';
import type { ApprovalRequest, RecordedDecision } from '../core/approvals.js';
import { parseAddress } from '../core/envelope.js';
import { NAME } from '../core/ids.js';
import { ErrorCode, isRetryable as retryableError, serializeError, TroupeError, type SerializedError } from '../core/errors.js';
import { msg, type Message, type ToolCall, type ToolMessage } from '../core/messages.js';
import type { ModelResponse, Usage } from '../core/model.js';
import { ROOT_ACTOR_ID } from '../core/run-host.js';
import { runtimeOf, type Budget } from '../core/runtime.js';
import type { SupervisionPolicy } from './supervision.js';
import type { Tool } from '../core/tool.js';
import type { ControlTool } from './controls.js';
import { definePolicy, narrow, PolicySchema, type Policy } from '../core/policy.js';
import { defineModelSettings, type ModelSettings } from '../core/model-settings.js';
import { defineOutput, outputCorrection, outputInstructions, type OutputContract } from '../core/output-schema.js';
import type { z } from 'zod';
import {
  APPROVAL_DECISION,
  ApprovalDecisionPayloadSchema,
  CrewMessage,
  ENVELOPE_EVENT,
  FailurePayloadSchema,
  payloadOf,
  ResultPayloadSchema,
  TaskPayloadSchema,
  type DelegatePayload,
  type EnvelopeEvent,
  type FailurePayload,
  type ResultPayload,
  type TaskPayload,
} from './protocol.js';
import { durableDeadline, durableTimer } from './durable-timer.js';
import { backoffDelay, checkBackoff, jitterUnit, type BackoffPolicy } from '../core/backoff.js';

/**
 * Retry policy of the `recovering` state: exponential backoff with jitter (defaults 200 ms
 * doubling to 5 s, jitter 0.5), never shorter than a provider's `Retry-After`.
 */
export interface RetryPolicy extends BackoffPolicy {
  /** Attempts of one step, the first included. Default 3. */
  maxAttempts: number;
  /**
   * The longest `Retry-After` the agent will wait out. A provider asking for more (a quota
   * reset an hour away) fails the step at once, saying so, instead of being called again
   * early or waited on for hours. Default 60 000 ms.
   */
  maxRetryAfterMs: number;
}

/** Options of {@link agent}. */
export interface AgentOptions {
  /** Unique within the crew: `[A-Za-z][A-Za-z0-9_-]*`. */
  id: string;
  /** One line on what the agent is for (shown in progress output and inspectors). */
  role: string;
  /** The system prompt. */
  instructions: string;
  /** Model reference `provider:model` (or `provider` for its default). */
  model: string;
  /**
   * Call settings sent with every model call of this agent (temperature, token limit, stop
   * sequences, provider-specific fields), checked when the agent is defined.
   *
   * @example
   * agent({ id: 'writer', role: 'Writes', instructions: 'Write.', model: 'openai:gpt-4o',
   *   settings: { temperature: 0.2, maxOutputTokens: 800, providerOptions: { openai: { user: 'crew-7' } } } });
   */
  settings?: ModelSettings;
  /**
   * The shape of the agent's final answer, a zod schema of JSON values. The model is shown
   * it as JSON Schema; an answer that is not JSON or does not fit is sent back with what is
   * wrong and costs a step; out of steps, the agent fails with `OUTPUT_INVALID`. The answer
   * passed on (to the next agent, the manager, the run's result) is the validated value as JSON.
   *
   * @example
   * agent({ id: 'extractor', role: 'Extracts', instructions: 'Extract the title.', model: 'openai:gpt-4o',
   *   output: z.object({ title: z.string(), year: z.number().int() }) });
   */
  output?: z.ZodType;
  tools?: readonly Tool[];
  /** Model steps per task before the agent fails with `MAX_STEPS`. Default 10. */
  maxSteps?: number;
  retry?: Partial<RetryPolicy>;
  /**
   * Longest a model call or a step's tool calls may take before the step fails (and is
   * retried from `recovering`). The deadline is stored, so it holds across a restore.
   */
  timeoutMs?: number;
  /** Overrides the crew's supervision policy for this agent. */
  supervision?: Partial<SupervisionPolicy>;
  /** Limits for this agent within a run. */
  budget?: Budget;
  /** Which tool scopes the agent may use (`allow`), must ask a human for (`ask`) or may not (`deny`). */
  policy?: Policy;
}

/** A fully-defaulted agent definition. */
export interface AgentDefinition {
  readonly kind: 'agent';
  readonly id: string;
  readonly role: string;
  readonly instructions: string;
  readonly model: string;
  /** Call settings sent with every model call (absent when none were given). */
  readonly settings?: ModelSettings;
  /** The schema of the final answer, when it has one. */
  readonly output?: OutputContract;
  readonly tools: readonly Tool[];
  readonly maxSteps: number;
  readonly retry: RetryPolicy;
  readonly timeoutMs: number | null;
  readonly supervision?: Partial<SupervisionPolicy>;
  readonly budget?: Budget;
  readonly policy?: Policy;
}

/** Defines an agent. Throws a `TypeError` when the definition breaks a rule. */
export function agent(options: AgentOptions): AgentDefinition {
  if (!NAME.test(options?.id ?? '')) throw new TypeError(`agent id "${options?.id}" must match ${NAME}`);
  if (typeof options.model !== 'string' || !options.model) throw new TypeError(`agent "${options.id}" needs a model reference`);
  const tools = options.tools ?? [];
  const names = new Set<string>();
  for (const t of tools) {
    if (names.has(t.name)) throw new TypeError(`agent "${options.id}" has two tools named "${t.name}"`);
    names.add(t.name);
  }
  if (options.timeoutMs !== undefined && !(Number.isFinite(options.timeoutMs) && options.timeoutMs > 0)) throw new TypeError(`agent "${options.id}": timeoutMs must be a positive number`);
  const maxSteps = options.maxSteps ?? 10;
  if (!Number.isInteger(maxSteps) || maxSteps < 1) throw new TypeError(`agent "${options.id}": maxSteps must be a positive integer`);
  const retry = checkBackoff(`agent "${options.id}"`, 'retry.', { maxAttempts: 3, initialDelayMs: 200, maxDelayMs: 5_000, factor: 2, jitter: 0.5, maxRetryAfterMs: 60_000, ...options.retry });
  if (!Number.isInteger(retry.maxAttempts) || retry.maxAttempts < 1) throw new TypeError(`agent "${options.id}": retry.maxAttempts must be a positive integer`);
  if (!(retry.maxRetryAfterMs >= 0)) throw new TypeError(`agent "${options.id}": retry.maxRetryAfterMs must be a non-negative number of milliseconds`);
  const settings = options.settings === undefined ? undefined : defineModelSettings(`agent "${options.id}"`, options.settings);
  const output = options.output === undefined ? undefined : defineOutput(`agent "${options.id}"`, options.output);
  return {
    kind: 'agent',
    id: options.id,
    role: options.role,
    instructions: options.instructions,
    model: options.model,
    ...(settings ? { settings } : {}),
    ...(output ? { output } : {}),
    tools,
    maxSteps,
    retry,
    timeoutMs: options.timeoutMs ?? null,
    ...(options.supervision ? { supervision: options.supervision } : {}),
    ...(options.budget ? { budget: options.budget } : {}),
    ...(options.policy ? { policy: definePolicy(options.policy) } : {}),
  };
}

/** The task an agent is working on and where its answer goes. */
interface Task {
  from: string;
  corr?: string;
  replyTo?: string;
}

/** The persisted context of an agent actor. */
export interface AgentContext {
  conversation: Message[];
  step: number;
  attempt: number;
  task: Task | null;
  pendingCalls: ToolCall[];
  failedPhase: 'planning' | 'acting';
  retryAt: number;
  lastError: SerializedError | null;
  output: string | null;
  usage: Usage;
  tasksDone: number;
  /** The human decision this agent waits for, while in `awaitingApproval`. */
  approval: ApprovalRequest | null;
  /** Decisions received during the current task, by call id, each bound to its approval. */
  decisions: Record<string, RecordedDecision>;
  /** The delegation this agent waits on, while in `delegating`. */
  delegation: { corr: string; toolCallId: string; agent: string } | null;
  /** Set when the agent's turn ended by handing off; sent with its result. */
  handoff: { to: string; context: string; policy?: Policy } | null;
  /** A policy that came with the task (from a handoff): it can only narrow the agent's own. */
  taskPolicy: Policy | null;
  /** When the current model call or tool step times out (`timeoutMs`), if it can. */
  deadline: number | null;
  /**
   * Earlier tasks of this agent that failed or were reset: their recorded effects are owed
   * to later attempts and never executed again (core/effect-inheritance.ts). Absent in
   * snapshots written before the rule existed.
   */
  inherits?: number[];
  /** The first task since the last reset: a reset hands every task from here on to the next attempt. */
  generation?: number;
  /**
   * Model answers of this agent's tasks that completed since the last reset: tells a model
   * which turn of the run a call is (`ModelRequest.priorTurns`). Absent in older snapshots.
   */
  turnsDone?: number;
  /** Why the last final answer did not fit the agent's `output` schema (absent in older snapshots). */
  outputProblem?: string | null;
}

/**
 * The fields that belong to one task, as no task has them: what a new task starts from, what
 * a reset leaves, and part of an agent's first context (one list, not three to keep in step).
 */
const noTask = () =>
  ({
    conversation: [] as Message[],
    step: 0,
    attempt: 0,
    task: null,
    pendingCalls: [] as ToolCall[],
    lastError: null,
    output: null,
    approval: null,
    decisions: {},
    delegation: null,
    handoff: null,
    taskPolicy: null,
    outputProblem: null,
  }) satisfies Partial<AgentContext>;

/** Events an agent accepts: envelopes delivered by the node's mailbox. */
export type AgentEvent = EnvelopeEvent;

/**
 * A task whose payload does not follow the protocol (only a local `node.tell` can deliver
 * one: the node refuses it from a peer). Its text is its `content` if that is a string, else
 * the payload as JSON, as before the protocol had schemas; a policy that does not parse
 * denies everything rather than widening anything.
 */
function looseTask(payload: unknown): TaskPayload {
  const fields = (payload !== null && typeof payload === 'object' ? payload : {}) as { content?: unknown; policy?: unknown };
  const content = typeof fields.content === 'string' ? fields.content : JSON.stringify(payload);
  if (fields.policy === undefined) return { content };
  const policy = PolicySchema.safeParse(fields.policy);
  return { content, policy: policy.success ? policy.data : { deny: ['*'] } };
}

/** `tasks` plus every task number from `from` to `to`, sorted and without repeats. */
const withTasks = (tasks: readonly number[] | undefined, from: number, to: number): number[] => {
  const all = new Set(tasks ?? []);
  for (let t = from; t <= to; t++) all.add(t);
  return [...all].sort((a, b) => a - b);
};

/** Whether the last failure is worth another attempt (unknown errors are: most are blips). */
const isRetryable = (error: SerializedError | null) => error === null || retryableError(error);
/** How long the last failure asked us to wait (`Retry-After`), 0 when it did not say. */
const askedWaitMs = (error: SerializedError | null) => error?.retryAfterMs ?? 0;

/** The last assistant turn's text: the answer of a turn that called no tool. */
const lastAnswer = (conversation: readonly Message[]) => [...conversation].reverse().find((m) => m.role === 'assistant')?.content ?? '';

/**
 * Builds the XState machine of one agent. It holds nothing of a run: every action and actor
 * reaches the run it acts in through {@link runtimeOf}`(system)`, so a crew builds its
 * machines once and every run of it shares them (building them was half a millisecond per
 * agent at every start and every resume).
 */
export function createAgentMachine(def: AgentDefinition, controls: readonly ControlTool[] = []) {
  const offered: readonly Tool[] = [...def.tools, ...controls];
  const effectivePolicy = (context: AgentContext): Policy | undefined =>
    def.policy && context.taskPolicy ? narrow(def.policy, context.taskPolicy) : (context.taskPolicy ?? def.policy);
  const controlOf = (response: ModelResponse) => {
    const call = response.message.toolCalls?.find((c) => controls.some((t) => t.name === c.name));
    return call ? { call, kind: controls.find((t) => t.name === call.name)!.control } : undefined;
  };
  /**
   * The wait before retry `attempt` of the current step: the shared exponential backoff,
   * jittered by a hash of who and where (run, agent, task, step, attempt) so agents failing
   * together spread out, while a replayed step computes the same deadline.
   */
  const backoff = (runId: string, context: AgentContext, attempt: number) =>
    backoffDelay(def.retry, attempt, jitterUnit(runId, def.id, context.tasksDone + 1, context.step, attempt));
  /** Whether the server asked for a longer wait than the agent is willing to sit out. */
  const waitTooLong = (context: AgentContext) => askedWaitMs(context.lastError) > def.retry.maxRetryAfterMs;

  const machineSetup = setup({
    types: {} as { context: AgentContext; events: AgentEvent },
    actors: {
      callModel: fromPromise<ModelResponse, { task: number; step: number; attempt: number; priorTurns: number; messages: Message[] }>(({ input, signal, system }) =>
        runtimeOf(system).callModel(def.id, { model: def.model, task: input.task, step: input.step, attempt: input.attempt, priorTurns: input.priorTurns, messages: input.messages, tools: offered, ...(def.settings ? { settings: def.settings } : {}) }, signal),
      ),
      runTools: fromPromise<ToolMessage[], { task: number; step: number; calls: ToolCall[]; decisions: Record<string, RecordedDecision>; inherits: number[]; policy?: Policy }>(async ({ input, signal, system }) => {
        // One at a time and in order: a crash leaves at most one call in doubt.
        const runtime = runtimeOf(system);
        const results: ToolMessage[] = [];
        for (const call of input.calls) {
          results.push(
            await runtime.runTool(def.id, { task: input.task, step: input.step, call, tools: def.tools, decisions: input.decisions, inherits: input.inherits, policy: input.policy }, signal),
          );
        }
        return results;
      }),
      durableTimer,
      stepTimer: durableDeadline,
    },
    guards: {
      isTask: ({ event }) => event.envelope.type === CrewMessage.task,
      isReset: ({ event }) => event.envelope.type === CrewMessage.reset,
      wantsDelegation: (_, params: { response: ModelResponse }) => controlOf(params.response)?.kind === 'delegate',
      wantsHandoff: (_, params: { response: ModelResponse }) => controlOf(params.response)?.kind === 'handoff',
      isDelegationReply: ({ context, event }) =>
        (event.envelope.type === CrewMessage.result || event.envelope.type === CrewMessage.failure) && event.envelope.corr !== undefined && event.envelope.corr === context.delegation?.corr,
      wantsTools: (_, params: { response: ModelResponse }) => (params.response.message.toolCalls?.length ?? 0) > 0,
      answerInvalid: (_, params: { response: ModelResponse }) => def.output !== undefined && !def.output.check(params.response.message.content).ok,
      stepsExhausted: ({ context }) => context.step >= def.maxSteps,
      retriesExhausted: ({ context }) => context.attempt >= def.retry.maxAttempts || !isRetryable(context.lastError) || waitTooLong(context),
      failedWhileActing: ({ context }) => context.failedPhase === 'acting',
      needsApproval: (_, params: { error: unknown }) => (params.error as { code?: string })?.code === ErrorCode.APPROVAL_REQUIRED,
      isPendingDecision: ({ context, event }) =>
        event.envelope.type === APPROVAL_DECISION && context.approval !== null && payloadOf(ApprovalDecisionPayloadSchema, event.envelope)?.approvalId === context.approval.id,
    },
    actions: {
      startTask: assign(({ event, context }) => {
        const env = event.envelope;
        const { content, policy } = payloadOf(TaskPayloadSchema, env) ?? looseTask(env.payload);
        return {
          ...noTask(),
          conversation: [msg.system(def.output ? `${def.instructions}\n\n${outputInstructions(def.output)}` : def.instructions), msg.user(content, parseAddress(env.from).actorId)],
          step: 1,
          task: { from: env.from, ...(env.corr ? { corr: env.corr } : {}), ...(env.replyTo ? { replyTo: env.replyTo } : {}) },
          tasksDone: context.tasksDone,
          taskPolicy: policy ?? null,
        };
      }),
      recordResponse: assign(({ context }, params: { response: ModelResponse }) => ({
        conversation: [...context.conversation, params.response.message],
        outputProblem: null,
        pendingCalls: params.response.message.toolCalls ?? [],
        attempt: 0,
        usage: {
          inputTokens: context.usage.inputTokens + params.response.usage.inputTokens,
          outputTokens: context.usage.outputTokens + params.response.usage.outputTokens,
        },
      })),
      // With a schema, what goes on is the validated value, not the model's wording of it.
      setOutput: assign(({ context }) => {
        const answer = lastAnswer(context.conversation);
        const checked = def.output?.check(answer);
        return { output: checked?.ok ? checked.json : answer, outputProblem: null };
      }),
      rejectAnswer: assign(({ context }) => {
        const checked = def.output!.check(lastAnswer(context.conversation));
        const problem = checked.ok ? 'the answer could not be read' : checked.problem;
        return { conversation: [...context.conversation, msg.user(outputCorrection(problem))], outputProblem: problem };
      }),
      recordToolResults: assign(({ context }, params: { results: ToolMessage[] }) => ({
        conversation: [...context.conversation, ...params.results],
        pendingCalls: [],
        attempt: 0,
      })),
      nextStep: assign(({ context }) => ({ step: context.step + 1 })),
      armDeadline: assign(({ system }) => ({ deadline: def.timeoutMs === null ? null : runtimeOf(system).clock.now() + def.timeoutMs })),
      recordTimeout: assign((_, params: { phase: 'planning' | 'acting' }) => ({
        lastError: new TroupeError(ErrorCode.TIMEOUT, `${params.phase === 'planning' ? 'model call' : 'tool calls'} of agent "${def.id}" took longer than ${def.timeoutMs} ms`, {
          details: { timeoutMs: def.timeoutMs },
          retryable: true,
        }).toJSON(),
        failedPhase: params.phase,
      })),
      recordFailure: assign((_, params: { error: unknown; phase: 'planning' | 'acting' }) => ({
        lastError: serializeError(params.error),
        failedPhase: params.phase,
      })),
      // The server's Retry-After is a floor, not a replacement: calling earlier than asked
      // only earns another 429, and our own backoff still grows if the server asks for less.
      scheduleRetry: assign(({ context, system }) => {
        const runtime = runtimeOf(system);
        return {
          attempt: context.attempt + 1,
          retryAt: runtime.clock.now() + Math.max(backoff(runtime.runId, context, context.attempt + 1), askedWaitMs(context.lastError)),
        };
      }),
      // Out of steps while correcting its answer, the agent failed at the output, not at the work:
      // the code says which, and a restart would only go through the same steps again.
      failMaxSteps: assign(({ context }) => ({
        lastError: context.outputProblem
          ? new TroupeError(ErrorCode.OUTPUT_INVALID, `agent "${def.id}" used its ${def.maxSteps} steps without an answer that fits its output schema; last: ${context.outputProblem}`, {
              details: { steps: context.step, problem: context.outputProblem },
              retryable: false,
            }).toJSON()
          : new TroupeError(ErrorCode.MAX_STEPS, `agent "${def.id}" used its ${def.maxSteps} steps without finishing`, {
              details: { steps: context.step },
            }).toJSON(),
      })),
      failRetries: assign(({ context }) => {
        const last = context.lastError;
        // What cannot succeed is passed on as it is: its own words say best what to fix.
        if (!isRetryable(last)) return { lastError: last };
        if (waitTooLong(context)) {
          // Final, so the crew does not restart into the same wall either.
          return {
            lastError: new TroupeError(
              ErrorCode.RETRIES_EXHAUSTED,
              `agent "${def.id}" will not wait ${askedWaitMs(last)} ms as asked, more than retry.maxRetryAfterMs (${def.retry.maxRetryAfterMs} ms): ${last?.message}`,
              { details: { attempts: context.attempt, last, maxRetryAfterMs: def.retry.maxRetryAfterMs }, retryable: false, retryAfterMs: askedWaitMs(last) },
            ).toJSON(),
          };
        }
        // The wait the provider asked for travels on, so a restart by the crew honours it too.
        return {
          lastError: new TroupeError(ErrorCode.RETRIES_EXHAUSTED, `agent "${def.id}" gave up after ${def.retry.maxAttempts} attempts: ${last?.message}`, {
            details: { attempts: def.retry.maxAttempts, last },
            ...(last?.retryAfterMs !== undefined ? { retryAfterMs: last.retryAfterMs } : {}),
          }).toJSON(),
        };
      }),
      replyDone: ({ context, system }) => {
        if (!context.task?.replyTo) return;
        // `done` is entered with an output set (the answer, or the handoff's words).
        const output = context.output ?? '';
        const payload: ResultPayload = context.handoff ? { output, handoff: context.handoff } : { output };
        runtimeOf(system).post(def.id, { to: context.task.replyTo, type: CrewMessage.result, payload, ...(context.task.corr ? { corr: context.task.corr } : {}) });
      },
      replyFailed: ({ context, system }) => {
        if (!context.task?.replyTo) return;
        const payload: FailurePayload = { error: context.lastError ?? { name: 'Error', message: `agent "${def.id}" failed` } };
        runtimeOf(system).post(def.id, { to: context.task.replyTo, type: CrewMessage.failure, payload, ...(context.task.corr ? { corr: context.task.corr } : {}) });
      },
      setApproval: assign(({ system }, params: { error: unknown }) => {
        const details = (params.error as { details?: Record<string, unknown> }).details ?? {};
        return {
          approval: {
            id: runtimeOf(system).newId('approval'),
            callId: String(details.callId),
            tool: String(details.tool),
            args: details.args,
            reason: details.reason === 'policy' ? ('policy' as const) : ('outcome-unknown' as const),
            message: (params.error as Error).message,
          },
        };
      }),
      announceApproval: ({ context, system }) => {
        if (context.approval) runtimeOf(system).requestApproval(def.id, context.approval);
      },
      recordDecision: assign(({ context, event }) => {
        // The guard parsed it already.
        const payload = ApprovalDecisionPayloadSchema.parse(event.envelope.payload);
        return { approval: null, decisions: { ...context.decisions, [payload.callId]: { ...payload.decision, approvalId: payload.approvalId } } };
      }),
      startDelegation: assign(({ context, system }, params: { response: ModelResponse }) => {
        const { call } = controlOf(params.response)!;
        const args = call.args as { agent?: unknown; task?: unknown };
        const corr = `${def.id}.t${context.tasksDone + 1}.s${context.step}.${call.id}`;
        // Other calls of the same turn are answered as not run: control changes who acts next.
        const skipped = (params.response.message.toolCalls ?? []).filter((c) => c.id !== call.id).map((c) => msg.tool(c.id, c.name, 'error: not executed: a delegation in the same turn takes precedence', true));
        const payload: DelegatePayload = { agent: String(args.agent), task: String(args.task) };
        runtimeOf(system).post(def.id, { to: ROOT_ACTOR_ID, type: CrewMessage.delegate, payload, corr, replyTo: def.id });
        return { delegation: { corr, toolCallId: call.id, agent: String(args.agent) }, conversation: [...context.conversation, ...skipped] };
      }),
      recordDelegationReply: assign(({ context, event }) => {
        const d = context.delegation!;
        const result = event.envelope.type === CrewMessage.result ? payloadOf(ResultPayloadSchema, event.envelope) : undefined;
        const failure = event.envelope.type === CrewMessage.failure ? payloadOf(FailurePayloadSchema, event.envelope) : undefined;
        const message = result
          ? msg.tool(d.toolCallId, 'delegate', result.output)
          : msg.tool(d.toolCallId, 'delegate', `error: ${d.agent} failed: ${failure?.error.message ?? 'its answer did not follow the protocol'}`, true);
        return { delegation: null, conversation: [...context.conversation, message] };
      }),
      setHandoff: assign(({ context }, params: { response: ModelResponse }) => {
        const { call } = controlOf(params.response)!;
        const args = call.args as { to?: unknown; context?: unknown };
        // The next agent gets at most this agent's permissions: a handoff only narrows.
        const policy = effectivePolicy(context);
        return { handoff: { to: String(args.to), context: String(args.context ?? ''), ...(policy ? { policy } : {}) }, output: params.response.message.content };
      }),
      reset: assign(({ context }) => ({
        // Everything this generation did is undone only in the crew's process, not in the
        // world: the next attempts inherit its effects instead of repeating them.
        inherits: withTasks(context.inherits, context.generation ?? 1, context.tasksDone + 1),
        generation: context.tasksDone + 2,
        ...noTask(),
        // A new task number, so a restarted agent does not replay the failed attempt's calls.
        tasksDone: context.tasksDone + 1,
        // The process starts over, so the agent's turns do too.
        turnsDone: 0,
      })),
      countTask: assign(({ context }) => ({ tasksDone: context.tasksDone + 1 })),
      // Only a task that completed moves the agent on in its turns: a failed one is asked again.
      countTurns: assign(({ context }) => ({ turnsDone: (context.turnsDone ?? 0) + context.conversation.filter((m) => m.role === 'assistant').length })),
      // A failed task's effects are owed to whoever does the work next (a restart, a re-delegation).
      releaseTask: assign(({ context }) => ({ inherits: withTasks(context.inherits, context.tasksDone + 1, context.tasksDone + 1) })),
    },
  });

  /** The step timeout that runs beside a model call or a tool step (a no-op without `timeoutMs`). */
  const deadlineOf = (phase: 'planning' | 'acting') =>
    ({
      id: 'deadline',
      src: 'stepTimer',
      input: ({ context }: { context: AgentContext }) => ({ deadline: context.deadline }),
      onDone: { target: 'recovering', actions: { type: 'recordTimeout', params: { phase } } },
    }) as const;

  return machineSetup.createMachine({
    id: def.id,
    context: {
      ...noTask(),
      failedPhase: 'planning',
      retryAt: 0,
      usage: { inputTokens: 0, outputTokens: 0 },
      tasksDone: 0,
      deadline: null,
      inherits: [],
      generation: 1,
      turnsDone: 0,
    },
    // A supervisor's reset works in any state: invocations of the left state are cancelled.
    on: { [ENVELOPE_EVENT]: { guard: 'isReset', target: '.idle', actions: 'reset' } },
    initial: 'idle',
    states: {
      idle: { on: { [ENVELOPE_EVENT]: { guard: 'isTask', target: 'planning', actions: 'startTask' } } },
      planning: {
        entry: 'armDeadline',
        invoke: [
          deadlineOf('planning'),
          {
            id: 'model',
            src: 'callModel',
            input: ({ context }) => ({ task: context.tasksDone + 1, step: context.step, attempt: context.attempt, priorTurns: context.turnsDone ?? 0, messages: context.conversation }),
            onDone: [
              {
                guard: { type: 'wantsDelegation', params: ({ event }) => ({ response: event.output }) },
                target: 'delegating',
                actions: [{ type: 'recordResponse', params: ({ event }) => ({ response: event.output }) }, { type: 'startDelegation', params: ({ event }) => ({ response: event.output }) }],
              },
              {
                guard: { type: 'wantsHandoff', params: ({ event }) => ({ response: event.output }) },
                target: 'done',
                actions: [{ type: 'recordResponse', params: ({ event }) => ({ response: event.output }) }, { type: 'setHandoff', params: ({ event }) => ({ response: event.output }) }],
              },
              { guard: { type: 'wantsTools', params: ({ event }) => ({ response: event.output }) }, target: 'acting', actions: { type: 'recordResponse', params: ({ event }) => ({ response: event.output }) } },
              {
                guard: { type: 'answerInvalid', params: ({ event }) => ({ response: event.output }) },
                target: 'observing',
                actions: [{ type: 'recordResponse', params: ({ event }) => ({ response: event.output }) }, 'rejectAnswer'],
              },
              { target: 'done', actions: [{ type: 'recordResponse', params: ({ event }) => ({ response: event.output }) }, 'setOutput'] },
            ],
            onError: { target: 'recovering', actions: { type: 'recordFailure', params: ({ event }) => ({ error: event.error, phase: 'planning' as const }) } },
          },
        ],
      },
      acting: {
        entry: 'armDeadline',
        invoke: [
          deadlineOf('acting'),
          {
            id: 'tools',
            src: 'runTools',
            input: ({ context }) => ({
              task: context.tasksDone + 1,
              step: context.step,
              calls: context.pendingCalls,
              decisions: context.decisions,
              inherits: context.inherits ?? [],
              policy: effectivePolicy(context),
            }),
            onDone: { target: 'observing', actions: { type: 'recordToolResults', params: ({ event }) => ({ results: event.output }) } },
            onError: [
              {
                guard: { type: 'needsApproval', params: ({ event }) => ({ error: event.error }) },
                target: 'awaitingApproval',
                actions: { type: 'setApproval', params: ({ event }) => ({ error: event.error }) },
              },
              { target: 'recovering', actions: { type: 'recordFailure', params: ({ event }) => ({ error: event.error, phase: 'acting' as const }) } },
            ],
          },
        ],
      },
      delegating: {
        on: { [ENVELOPE_EVENT]: { guard: 'isDelegationReply', target: 'observing', actions: 'recordDelegationReply' } },
      },
      awaitingApproval: {
        entry: 'announceApproval',
        on: { [ENVELOPE_EVENT]: { guard: 'isPendingDecision', target: 'acting', actions: 'recordDecision' } },
      },
      observing: {
        always: [
          { guard: 'stepsExhausted', target: 'failed', actions: 'failMaxSteps' },
          { target: 'planning', actions: 'nextStep' },
        ],
      },
      recovering: {
        entry: 'scheduleRetry',
        always: { guard: 'retriesExhausted', target: 'failed', actions: 'failRetries' },
        invoke: {
          id: 'backoff',
          src: 'durableTimer',
          input: ({ context }) => ({ deadline: context.retryAt }),
          onDone: [{ guard: 'failedWhileActing', target: 'acting' }, { target: 'planning' }],
        },
      },
      done: {
        entry: ['countTurns', 'countTask', 'replyDone'],
        on: { [ENVELOPE_EVENT]: { guard: 'isTask', target: 'planning', actions: 'startTask' } },
      },
      failed: {
        entry: ['releaseTask', 'countTask', 'replyFailed'],
        on: { [ENVELOPE_EVENT]: { guard: 'isTask', target: 'planning', actions: 'startTask' } },
      },
    },
  });
}

/** The machine type of an agent. */
export type AgentMachine = ReturnType<typeof createAgentMachine>;
/** A running agent actor. */
export type AgentActorRef = ActorRefFrom<AgentMachine>;
