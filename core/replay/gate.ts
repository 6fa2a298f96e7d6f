import { ErrorCode, TroupeError } from '../errors.js';
import type { ToolMessage } from '../messages.js';
import type { ModelResponse } from '../model.js';
import type { ModelStep, ToolStep } from '../runtime.js';

/** What a gate answers for a model call: a recorded response to use, or the model to ask. */
export type GatedModelCall = { response: ModelResponse } | { ask: string };

/**
 * Stands between a run's calls and the world, for a replay (core/replay/replay.ts): every
 * model call and every tool call of the run is put to it before it would execute. A call the
 * ledger of the run itself already answers (work before a replay's starting checkpoint)
 * never reaches it. A gate that wants the run to go no further never settles the call: the
 * replay stops the run, whose signal aborts it.
 */
export interface CallGate {
  /** Before a model call: serve `response`, or ask model `ask` (a reference `provider:model`). */
  model(agentId: string, step: ModelStep, callId: string, signal: AbortSignal): Promise<GatedModelCall>;
  /** After a model call the gate let through, with what the model answered. */
  answered?(agentId: string, step: ModelStep, callId: string, response: ModelResponse): void;
  /** A tool call: the gate always answers it (served from a recording, or refused); the tool never runs. */
  tool(agentId: string, step: ToolStep, callId: string, signal: AbortSignal): Promise<ToolMessage>;
}

/**
 * The key of {@link CallGate} in the options of `createNode`: not part of the public
 * options, a replay's scratch node is its only user.
 */
export const CALL_GATE: unique symbol = Symbol('troupe.callGate');

/** `createNode` options as a replay passes them. */
export interface GatedNodeOptions {
  [CALL_GATE]?: CallGate;
}

/** A call a gate will not let through: settles only when `signal` aborts (the run was stopped), rejecting with `ABORTED` and `why`. */
export function holdCall(signal: AbortSignal, why: string): Promise<never> {
  return new Promise((_resolve, reject) => {
    const abort = () => reject(new TroupeError(ErrorCode.ABORTED, why));
    if (signal.aborted) abort();
    else signal.addEventListener('abort', abort, { once: true });
  });
}
