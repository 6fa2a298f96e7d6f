import { canonicalJson } from '../audit-log.js';
import { agentOfCallId, parseCallId } from '../call-id.js';
import type { Clock, IdGenerator } from '../clock.js';
import { ErrorCode, TroupeError } from '../errors.js';
import { forkOps } from '../fork.js';
import { memoryStorage } from '../memory-storage.js';
import type { ToolMessage } from '../messages.js';
import { splitModelRef, type ModelProvider, type ModelProviders, type ModelResponse } from '../model.js';
import type { NodeOptions, TroupeNode } from '../node-types.js';
import type { RunStore } from '../run-store.js';
import type { RunnableDefinition, ToolStep } from '../runtime.js';
import { compareModelCall, describeCall, DivergenceKind, type Divergence } from './divergence.js';
import { CALL_GATE, holdCall, type CallGate, type GatedModelCall, type GatedNodeOptions } from './gate.js';
import { doneCalls, loadRecording, type Recording } from './recording.js';
import { rehearsalSide, type RehearsalStep } from './rehearsal.js';

/** Options of `node.replay`. */
export interface ReplayOptions {
  /** The crew code to replay the run with (same crew id as the run's). */
  crew: RunnableDefinition;
  /**
   * Replay from this checkpoint of the recording (see `history`): its state up to there is
   * taken as recorded, the calls after it are compared. Default: from the start.
   */
  at?: number;
  /**
   * Go on after a divergence instead of stopping there: a model call that does not match is
   * asked of its model, a tool call that does not match is not executed (the agent is told
   * so), and every divergence is listed. Default `false`.
   */
  continue?: boolean;
  /**
   * Model rehearsal: every call that asked model `from` is asked of `to` instead (both
   * `provider:model` references); tool calls are still served from the recording where they
   * match, and the report sets the two runs side by side.
   */
  rehearse?: { from: string; to: string };
  /** Providers of the models a replay asks (rehearsal, `continue`). Default: the node's. */
  models?: ModelProviders;
  /** Stops the replay (it then reports what it saw so far, `ended: 'stopped'`). */
  signal?: AbortSignal;
}

/** How a replay ended. */
export type ReplayEnd =
  /** The replayed run finished (completed or failed). */
  | 'finished'
  /** It reached the point where the recorded, unfinished run waits: the new code would continue from there. */
  | 'caught-up'
  /** It stopped at its first divergence. */
  | 'diverged'
  /** Its signal stopped it. */
  | 'stopped';

/** What a replay found. */
export interface ReplayReport {
  runId: string;
  crew: string;
  /** The recording's checkpoint the replay started from, `0` for its start. */
  from: number;
  /** Whether the new code asked exactly what the recording holds: no divergence. */
  clean: boolean;
  ended: ReplayEnd;
  /** Recorded calls (model and tool), calls served from the recording, calls that were not. */
  calls: { recorded: number; served: number; unserved: number };
  /** The first divergence, or with `continue` / rehearsal every one in the order found, up to {@link MAX_DIVERGENCES}. */
  divergences: Divergence[];
  /** Divergences found beyond {@link MAX_DIVERGENCES}, counted, not listed. */
  moreDivergences?: number;
  /** Status and final answer of the recorded run and of the replay (when it finished). */
  outcome: { recorded: { status: string; output?: string }; replayed?: { status: string; output: string } };
  /** With `rehearse`: the rehearsed model's calls, recorded and new side by side. */
  rehearsal?: RehearsalStep[];
}

/** Divergences a report lists; a replay that goes on past them counts the rest. */
export const MAX_DIVERGENCES = 100;

/** What `node.replay` lends the replay engine. */
export interface ReplayContext {
  store: RunStore;
  models: ModelProviders;
  clock: Clock;
  ids: IdGenerator;
  createNode(options: NodeOptions & GatedNodeOptions): Promise<TroupeNode>;
}

/** A model provider a replay registers for a reference it cannot ask: serving from the recording needs none. */
const recordingOnly = (id: string): ModelProvider => ({
  id,
  generate: () => Promise.reject(new TroupeError(ErrorCode.MODEL_NOT_FOUND, `model provider "${id}" is not registered for this replay: only recorded answers can be served`, { retryable: false })),
});

const notExecuted = (step: ToolStep, why: string): ToolMessage => ({
  role: 'tool',
  toolCallId: step.call.id,
  name: step.call.name,
  content: `Not executed: ${why}. A replay never runs tools.`,
  isError: true,
});

/**
 * Re-executes recorded run `runId` with `options.crew` in a scratch space (an in-memory node
 * of its own: the live run and its database are only read), serving every model and tool
 * call from the recording while the new code asks what the recording holds, and reports the
 * first divergence (or every one, with `continue`). No tool ever executes.
 */
export async function replayRun(ctx: ReplayContext, runId: string, options: ReplayOptions): Promise<ReplayReport> {
  if (!options?.crew || typeof options.crew.createMachine !== 'function') throw new TypeError('replay(runId, { crew }) needs the crew definition to replay with');
  if (options.at !== undefined && !(Number.isInteger(options.at) && options.at >= 1)) throw new TypeError('replay(runId, { at }) takes a checkpoint number (see history())');
  if (options.rehearse && !(typeof options.rehearse.from === 'string' && typeof options.rehearse.to === 'string')) throw new TypeError('replay(runId, { rehearse: { from, to } }) takes two model references');
  const recording = await loadRecording(ctx.store, runId);
  if (recording.run.crew !== options.crew.id) throw new TypeError(`run "${runId}" belongs to crew "${recording.run.crew}", not "${options.crew.id}"`);
  return replayRecording(ctx, recording, options);
}

/** {@link replayRun} over a recording already read (an imported one, or the live one). */
export async function replayRecording(ctx: ReplayContext, recording: Recording, options: ReplayOptions): Promise<ReplayReport> {
  const runId = recording.run.id;
  const from = options.at ?? 0;
  const scratch = memoryStorage();
  if (from > 0) {
    const checkpoint = await ctx.store.checkpoint(runId, from);
    if (!checkpoint) throw new TroupeError(ErrorCode.RUN_NOT_FOUND, `run "${runId}" has no checkpoint ${from} (it has ${recording.run.checkpoint})`, { details: { runId, at: from } });
    // The fork machinery copies the state at the checkpoint, under the same run id, into the scratch space.
    await scratch.write((await forkOps(ctx.store, recording.run, checkpoint, { runId, now: ctx.clock.now() })).ops);
  }
  const session = createReplaySession(recording, options, from);
  const models: Record<string, ModelProvider> = { ...ctx.models, ...options.models };
  const refs = [...Object.values(options.crew.modelRefs ?? {}), ...(options.rehearse ? [options.rehearse.to] : [])];
  for (const ref of refs) {
    const id = splitModelRef(ref).provider;
    models[id] ??= recordingOnly(id);
  }
  const node = await ctx.createNode({ storage: scratch, models, crews: [options.crew], resume: false, auditDir: false, clock: ctx.clock, ids: ctx.ids, passivateAfterMs: 0, [CALL_GATE]: session.gate });
  try {
    const run = from > 0 ? await node.resume(runId, options.crew) : await node.run(options.crew, { input: recording.run.input, runId });
    const stopped = new Promise<'stopped'>((resolve) => {
      if (options.signal?.aborted) resolve('stopped');
      options.signal?.addEventListener('abort', () => resolve('stopped'), { once: true });
    });
    const ended = await Promise.race([run.settled().then((result) => ({ result })), session.halted, stopped]);
    if (typeof ended === 'object') {
      session.finished(ended.result.status, ended.result.output);
      return session.report('finished');
    }
    await run.stop();
    return session.report(ended);
  } finally {
    await node.close();
    await scratch.close();
  }
}

/** The gate of one replay and what it tallies for the report. */
function createReplaySession(recording: Recording, options: ReplayOptions, from: number) {
  const { ledger } = recording;
  const keepGoing = options.continue === true || options.rehearse !== undefined;
  // Work before the starting checkpoint is in the scratch run's own ledger: never asked again.
  // (An entry that does not say which checkpoint wrote it is not copied by a fork: it counts as after.)
  const recorded = doneCalls(ledger).filter((e) => from === 0 || (e.checkpoint ?? Infinity) > from);
  const pending = new Set(recorded.map((e) => e.callId));
  const divergences: Divergence[] = [];
  let moreDivergences = 0;
  const rehearsal: RehearsalStep[] = [];
  let served = 0;
  let unserved = 0;
  let replayed: { status: string; output: string } | undefined;
  let halt!: (end: 'diverged' | 'caught-up') => void;
  const halted = new Promise<'diverged' | 'caught-up'>((resolve) => (halt = resolve));

  /** Records a divergence; `true` when the replay goes on (the call is then not served). */
  const diverge = (d: Divergence): boolean => {
    if (divergences.length < MAX_DIVERGENCES) divergences.push(d);
    else moreDivergences += 1;
    if (keepGoing) return true;
    halt('diverged');
    return false;
  };

  /** The recorded calls of `agentId` not yet asked for, oldest first. */
  const nextOf = (agentId: string) => recorded.filter((e) => pending.has(e.callId) && e.callId.startsWith(`${agentId}/`));

  /**
   * A call the recording has no entry for. An unfinished recording ends somewhere: when the
   * new code has asked for everything recorded, this is that end (or the approval the run
   * waits for), and the replay caught up with the run. Anything else is a divergence.
   */
  const unrecorded = (agentId: string, callId: string, what: string, signal: AbortSignal): Promise<never> | undefined => {
    const waitingHere = recording.waiting.find((a) => a.callId === callId);
    if (!recording.finished && pending.size === 0 && (recording.waiting.length === 0 || waitingHere)) {
      halt('caught-up');
      return holdCall(signal, 'the replay stopped here');
    }
    const next = nextOf(agentId)[0];
    const { task, step } = stepFields(callId);
    const recordedText = next ? `next recorded call of ${agentId}: ${next.callId} (${next.kind === 'tool' ? describeCall({ name: next.name, args: next.args }) : next.name})` : recording.finished ? `no more calls of ${agentId}: the recorded run ${recording.run.status}` : `no more calls of ${agentId}`;
    return diverge({ kind: DivergenceKind.unrecorded, agent: agentId, ...(task !== undefined ? { task, step } : {}), callId, recorded: recordedText, requested: what }) ? undefined : holdCall(signal, 'the replay stopped here');
  };

  const gate: CallGate = {
    async model(agentId, step, callId, signal): Promise<GatedModelCall> {
      const entry = ledger.get(callId);
      const rehearsed = options.rehearse && step.model === options.rehearse.from;
      if (rehearsed) {
        pending.delete(callId);
        unserved += 1;
        rehearsal.push({ agent: agentId, task: step.task, step: step.step, callId, recorded: entry?.status === 'done' ? rehearsalSide(entry.result as ModelResponse, entry.name) : undefined });
        return { ask: options.rehearse!.to };
      }
      if (entry?.kind !== 'model' || entry.status !== 'done') {
        const hold = unrecorded(agentId, callId, `a model call of ${step.model} at task ${step.task} step ${step.step}`, signal);
        if (hold) return hold;
        unserved += 1;
        return { ask: step.model };
      }
      const divergence = await compareModelCall(entry, step, { agent: agentId, callId }, () => recording.conversationOf(entry), { checkModel: true });
      if (divergence) {
        pending.delete(callId);
        if (!diverge(divergence)) return holdCall(signal, 'the replay stopped here');
        unserved += 1;
        return { ask: step.model };
      }
      pending.delete(callId);
      served += 1;
      return { response: entry.result as ModelResponse };
    },
    answered(_agentId, _step, callId, response) {
      const row = rehearsal.find((r) => r.callId === callId && !r.replayed);
      if (row) row.replayed = rehearsalSide(response, response.model ?? options.rehearse!.to);
    },
    async tool(agentId, step, callId, signal): Promise<ToolMessage> {
      const entry = ledger.get(callId);
      const asked = describeCall(step.call);
      // What the recorded model asked for (a human may have edited the arguments it ran with).
      const wanted = recording.toolCallOf(callId) ?? (entry ? { name: entry.name, args: entry.args } : undefined);
      if (wanted && (wanted.name !== step.call.name || canonicalJson(wanted.args) !== canonicalJson(step.call.args))) {
        pending.delete(callId);
        const stop = !diverge({ kind: DivergenceKind.toolCall, agent: agentId, task: step.task, step: step.step, callId, recorded: `tool call ${describeCall(wanted)}`, requested: `tool call ${asked}` });
        if (stop) return holdCall(signal, 'the replay stopped here');
        unserved += 1;
        return notExecuted(step, 'its tool or arguments differ from the recorded call');
      }
      if (entry?.kind !== 'tool' || entry.status !== 'done') {
        const hold = unrecorded(agentId, callId, `tool call ${asked}`, signal);
        if (hold) return hold;
        unserved += 1;
        return notExecuted(step, 'the recording has no result for this call');
      }
      pending.delete(callId);
      served += 1;
      return { ...(entry.result as ToolMessage), toolCallId: step.call.id, name: step.call.name };
    },
  };

  return {
    gate,
    halted,
    finished(status: string, output: string) {
      replayed = { status, output };
    },
    report(ended: ReplayEnd): ReplayReport {
      if (ended === 'finished') {
        const left = recorded.filter((e) => pending.has(e.callId));
        if (left.length > 0) {
          const first = left[0]!;
          divergences.push({
            kind: DivergenceKind.notAsked,
            agent: agentOfCallId(first.callId),
            callId: first.callId,
            ...stepFields(first.callId),
            recorded: `${left.length} recorded call${left.length === 1 ? '' : 's'} never asked for, the first ${first.callId} (${first.kind === 'tool' ? describeCall({ name: first.name, args: first.args }) : first.name})`,
            requested: `the run ${replayed?.status} without ${left.length === 1 ? 'it' : 'them'}`,
          });
        } else if (recording.finished && replayed && (replayed.status !== recording.run.status || (replayed.output ?? '') !== (recording.run.output ?? ''))) {
          divergences.push({ kind: DivergenceKind.outcome, recorded: `${recording.run.status}: ${JSON.stringify(recording.run.output ?? '')}`, requested: `${replayed.status}: ${JSON.stringify(replayed.output)}` });
        } else if (!recording.finished && recording.waiting.length > 0 && replayed) {
          const w = recording.waiting[0]!;
          divergences.push({ kind: DivergenceKind.notAsked, agent: agentOfCallId(w.callId), callId: w.callId, ...stepFields(w.callId), recorded: `the run waits for approval of ${describeCall({ name: w.tool, args: w.args })}`, requested: `the run ${replayed.status} without asking for it` });
        }
      }
      return {
        runId: recording.run.id,
        crew: recording.run.crew,
        from,
        clean: divergences.length === 0 && ended !== 'stopped',
        ended,
        calls: { recorded: recorded.length, served, unserved },
        divergences,
        ...(moreDivergences > 0 ? { moreDivergences } : {}),
        outcome: { recorded: { status: recording.run.status, ...(recording.run.output !== undefined ? { output: recording.run.output } : {}) }, ...(replayed ? { replayed } : {}) },
        ...(options.rehearse ? { rehearsal } : {}),
      };
    },
  };
}

/** Task and step of a call id, for a report. */
const stepFields = (callId: string): { task?: number; step?: number } => {
  const id = parseCallId(callId);
  return id ? { task: id.task, step: id.step } : {};
};

export type { Divergence, DivergenceKind } from './divergence.js';
export type { RehearsalStep } from './rehearsal.js';
