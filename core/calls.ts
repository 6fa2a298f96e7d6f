import type { UsageTracker } from './budget.js';
import type { Clock } from './clock.js';
import { ErrorCode, serializeError, TroupeError } from './errors.js';
import type { RunEvent } from './events.js';
import { MessageSchema, type AssistantMessage, type ToolMessage } from './messages.js';
import { resolveModel, type ModelProviders, type ModelResponse } from './model.js';
import type { JournalKind, LedgerEntry } from './run-store.js';
import type { RunLedger } from './run-ledger.js';
import type { ModelStep, ToolStep } from './runtime.js';
import type { SecurityContext } from './security.js';
import type { BlackboardAccess } from './tool.js';
import { executeTool } from './tool-executor.js';
import { modelCallId, toolCallId } from './call-id.js';
import { findInheritedEffect } from './effect-inheritance.js';
import type { CallGate } from './replay/gate.js';
import { requestPrint } from './replay/request-print.js';

/** What a run lends its model and tool calls: its ledger, journal and events. */
export interface CallDeps {
  runId: string;
  clock: Clock;
  models: ModelProviders;
  usage: UsageTracker;
  security: SecurityContext;
  ledger: RunLedger;
  running(): boolean;
  record(entry: LedgerEntry): void;
  /** Journals a fact; returns its sequence number (for the event that mirrors it). */
  journal(kind: JournalKind, actor: string, data: Record<string, unknown>): number;
  emit(event: RunEvent, seq?: number): void;
  /** Writes a checkpoint now; resolves once it is durable. */
  checkpoint(): Promise<void>;
  /** `undefined` when the node's write queue has room, else a promise of room: the backpressure every call waits for. */
  room(): Promise<void> | undefined;
  blackboard(agentId: string): BlackboardAccess | undefined;
  /** Set in a replay's scratch run only: every call not already in the run's ledger goes through it (core/replay/gate.ts). */
  gate?: CallGate;
}

/** Calls a model for one step of an agent, or replays the recorded answer of that step. */
export async function performModelCall(deps: CallDeps, agentId: string, step: ModelStep, signal: AbortSignal): Promise<ModelResponse> {
  const { runId, clock } = deps;
  const callId = modelCallId(agentId, step.task, step.step);
  const lookup = deps.ledger.get(callId);
  // Synchronous unless the run was restored and this call is new to this process.
  const recorded = lookup instanceof Promise ? await lookup : lookup;
  if (recorded?.status === 'done') {
    const response = recorded.result as ModelResponse;
    deps.emit({ type: 'model.call', runId, actor: agentId, callId, model: response.model ?? recorded.name, requested: step.model, usage: response.usage, ...(response.cost !== undefined ? { cost: response.cost } : {}), ms: 0, replayed: true });
    return response;
  }
  const full = deps.room();
  if (full) await full;
  const gated = deps.gate ? await deps.gate.model(agentId, step, callId, signal) : undefined;
  const { provider, model } = resolveModel(deps.models, gated && 'ask' in gated ? gated.ask : step.model);
  const reserved = deps.usage.reserve(agentId);
  const started = clock.now();
  let response: ModelResponse;
  try {
    response = gated && 'response' in gated ? gated.response : await provider.generate(
      {
        model,
        messages: step.messages,
        tools: step.tools.map((t) => t.spec),
        agent: agentId,
        runId,
        step: step.step,
        phase: step.attempt > 0 ? 'recover' : 'plan',
        attempt: step.attempt,
        priorTurns: step.priorTurns ?? 0,
        ...(step.settings ? { settings: step.settings } : {}),
      },
      { signal, onToken: (text) => deps.emit({ type: 'model.token', runId, actor: agentId, callId, text }) },
    );
    // A provider is outside the trust boundary too: its answer must be a well-formed turn.
    const parsed = MessageSchema.safeParse(response?.message);
    if (!parsed.success || parsed.data.role !== 'assistant') {
      throw new TroupeError(ErrorCode.MODEL_FAILED, `provider "${provider.id}" returned a malformed assistant message`, { cause: parsed.error });
    }
    response = { ...response, message: parsed.data as AssistantMessage };
  } catch (error) {
    if (deps.running() && !signal.aborted) {
      const serialized = serializeError(error);
      const failedAfter = clock.now() - started;
      const seq = deps.journal('model.error', agentId, { callId, model: step.model, error: serialized, ms: failedAfter });
      deps.emit({ type: 'model.error', runId, actor: agentId, callId, model: step.model, error: serialized, ms: failedAfter }, seq);
    }
    throw error;
  }
  const ms = clock.now() - started;
  if (gated && 'ask' in gated) deps.gate!.answered?.(agentId, step, callId, response);
  deps.usage.charge(agentId, reserved, response.usage.inputTokens + response.usage.outputTokens, response.cost ?? 0);
  const served = response.model ?? `${provider.id}:${model}`;
  // The request's print is what a replay compares new code's request with (core/replay/).
  deps.record({ callId, kind: 'model', status: 'done', name: served, result: response, ts: clock.now(), request: requestPrint(step) });
  const seq = deps.journal('model.call', agentId, {
    callId,
    model: served,
    requested: step.model,
    usage: response.usage,
    ms,
    ...(response.cost !== undefined ? { cost: response.cost } : {}),
    ...(response.meta ? { meta: response.meta } : {}),
  });
  deps.emit({ type: 'model.call', runId, actor: agentId, callId, model: served, requested: step.model, usage: response.usage, ...(response.cost !== undefined ? { cost: response.cost } : {}), ms, replayed: false }, seq);
  return response;
}

/** The earlier attempt's recorded effect this call takes over, if any (see core/effect-inheritance.ts). */
async function inheritedEffect(deps: CallDeps, agentId: string, step: ToolStep, inherits: readonly number[], callId: string): Promise<LedgerEntry | undefined> {
  const found = step.tools.find((t) => t.name === step.call.name);
  if (!found) return undefined;
  const decision = step.decisions[callId];
  const parsed = found.input.safeParse(decision?.args !== undefined ? decision.args : step.call.args);
  return parsed.success ? findInheritedEffect(await deps.ledger.all(), agentId, inherits, found.name, parsed.data) : undefined;
}

/** Runs one tool call of an agent under the effect ledger, or replays its recorded result. */
export async function performToolCall(deps: CallDeps, agentId: string, step: ToolStep, signal: AbortSignal): Promise<ToolMessage> {
  const { runId, clock, security } = deps;
  const callId = toolCallId(agentId, step.task, step.step, step.call.id);
  const lookup = deps.ledger.get(callId);
  const recorded = lookup instanceof Promise ? await lookup : lookup;
  if (recorded?.status === 'done') {
    const message = recorded.result as ToolMessage;
    deps.emit({ type: 'tool.call', runId, actor: agentId, callId, tool: step.call.name, ok: !message.isError, replayed: true, ms: 0 });
    return message;
  }
  if (deps.gate) return gatedToolCall(deps, agentId, step, callId, signal);
  // A restarted attempt asking for what a failed attempt already did gets that outcome.
  // Only a step that inherits looks (and waits): any other keeps its intent in this turn.
  const inherited = recorded || !step.inherits?.length ? undefined : await inheritedEffect(deps, agentId, step, step.inherits, callId);
  const lineage = inherited ? { inheritedFrom: inherited.callId } : {};
  if (inherited?.status === 'done') {
    const message: ToolMessage = { ...(inherited.result as ToolMessage), toolCallId: step.call.id, name: step.call.name };
    const { checkpoint: _c, callId: _id, ts: _ts, intentAt: _i, ...carried } = inherited;
    deps.record({ ...carried, callId, result: message, ts: clock.now(), ...lineage });
    const seq = deps.journal('tool.call', agentId, { callId, tool: step.call.name, ok: !message.isError, ms: 0, ...lineage });
    deps.emit({ type: 'tool.call', runId, actor: agentId, callId, tool: step.call.name, ok: !message.isError, replayed: true, ms: 0 }, seq);
    return message;
  }
  const full = deps.room();
  if (full) await full;
  const started = clock.now();
  let refusal: string | undefined;
  let intent: LedgerEntry | undefined;
  // Where this call was first in flight (an earlier attempt's intent), kept through rewrites.
  const firstIntentAt = recorded?.status === 'intent' ? (recorded.intentAt ?? recorded.checkpoint) : undefined;
  const message = await executeTool({
    call: step.call,
    tools: step.tools,
    callId,
    runId,
    agentId,
    signal,
    previous: recorded ?? inherited,
    decision: step.decisions[callId],
    blackboard: deps.blackboard(agentId),
    policy: step.policy,
    onPermission: (v) => {
      const seq = deps.journal('permission', agentId, { callId, tool: v.tool, scopes: [...v.scopes], decision: v.decision, ...(v.scope ? { scope: v.scope } : {}), ...(v.rule ? { rule: v.rule } : {}) });
      deps.emit({ type: 'permission', runId, actor: agentId, callId, tool: v.tool, decision: v.decision }, seq);
    },
    onToolError: (error) => {
      const reason = (error as { details?: { reason?: unknown } })?.details?.reason;
      if (typeof reason === 'string') refusal = reason;
    },
    secrets: security.secrets,
    learnSecrets: (values) => security.learn(values),
    redact: security.redact,
    // The intent must be on disk before the tool touches the world; it is written with a
    // full checkpoint, so everything that led to the call is durable too.
    recordIntent: async (entry) => {
      intent = { ...entry, ...lineage, ...(firstIntentAt !== undefined ? { intentAt: firstIntentAt } : {}) };
      deps.record(intent);
      await deps.checkpoint();
    },
    now: () => clock.now(),
  });
  const ms = clock.now() - started;
  // The done entry keeps what the intent knew (arguments, effect, key, secrets): a later
  // attempt may inherit it, and a resumed run re-resolves its secrets to redact them.
  // No intent this time (a human's recorded result, a refusal): what an earlier attempt's intent knew still holds.
  const base = intent ?? (recorded?.status === 'intent' ? recorded : undefined) ?? { status: 'done', ts: 0, callId, kind: 'tool' as const, name: step.call.name, ...lineage };
  const { status: _s, ts: _t, checkpoint: written, intentAt: first, ...known } = base;
  const intentAt = first ?? written ?? firstIntentAt;
  // When the intent became durable: a fork from a checkpoint between intent and result must
  // know the call was in flight there, or it would run it again under a key of its own.
  deps.record({ ...known, ...(intentAt !== undefined ? { intentAt } : {}), status: 'done', result: message, ts: clock.now() });
  const seq = deps.journal('tool.call', agentId, { callId, tool: step.call.name, ok: !message.isError, ms, ...(refusal ? { refused: refusal } : {}), ...lineage });
  deps.emit({ type: 'tool.call', runId, actor: agentId, callId, tool: step.call.name, ok: !message.isError, replayed: false, ms }, seq);
  return message;
}

/** A tool call of a replay's scratch run: answered by the gate, never executed. */
async function gatedToolCall(deps: CallDeps, agentId: string, step: ToolStep, callId: string, signal: AbortSignal): Promise<ToolMessage> {
  const { runId, clock } = deps;
  const message = await deps.gate!.tool(agentId, step, callId, signal);
  deps.record({ callId, kind: 'tool', status: 'done', name: step.call.name, args: step.call.args, result: message, ts: clock.now() });
  const seq = deps.journal('tool.call', agentId, { callId, tool: step.call.name, ok: !message.isError, ms: 0 });
  deps.emit({ type: 'tool.call', runId, actor: agentId, callId, tool: step.call.name, ok: !message.isError, replayed: true, ms: 0 }, seq);
  return message;
}
