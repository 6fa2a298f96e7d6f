import type { ApprovalDecision } from './approvals.js';
import { ErrorCode, TroupeError } from './errors.js';
import { msg, toolContent, type ToolCall, type ToolMessage } from './messages.js';
import type { LedgerEntry } from './run-store.js';
import type { BlackboardAccess, Tool, ToolContext } from './tool.js';

/** Inputs of {@link executeTool}. */
export interface ExecuteToolOptions {
  call: ToolCall;
  tools: readonly Tool[];
  callId: string;
  runId: string;
  agentId: string;
  signal: AbortSignal;
  /** The ledger entry left by an earlier attempt of this call (an intent without result). */
  previous: LedgerEntry | undefined;
  /** A human's decision on this exact call, when it waited for one. */
  decision?: ApprovalDecision | undefined;
  blackboard?: BlackboardAccess | undefined;
  /** Durably records the intent; resolves once it is on disk. */
  recordIntent(entry: LedgerEntry): Promise<void>;
  now(): number;
}

/**
 * Runs one tool call under the effect ledger. Problems the model can act on (unknown tool,
 * invalid arguments, the tool throwing) come back as error tool messages; the outcome is
 * then known, so they are recorded like results. Only an interrupted irreversible call
 * and a stopping run raise.
 */
export async function executeTool(options: ExecuteToolOptions): Promise<ToolMessage> {
  const { call, callId, previous } = options;
  const refuse = (text: string) => msg.tool(call.id, call.name, text, true);
  const found = options.tools.find((t) => t.name === call.name);
  if (!found) return refuse(`error: unknown tool "${call.name}"; available: ${options.tools.map((t) => t.name).join(', ') || 'none'}`);

  const decision = options.decision;
  if (decision?.decision === 'reject') {
    return refuse(`error: not executed: rejected by a human${decision.reason ? `: ${decision.reason}` : ''}`);
  }
  if (decision && 'result' in decision && decision.result !== undefined) {
    // The human confirmed the interrupted call did take effect, with this result.
    return msg.tool(call.id, call.name, toolContent(decision.result));
  }
  const parsed = found.input.safeParse(decision && decision.args !== undefined ? decision.args : call.args);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    return refuse(`error: invalid arguments for ${found.name}: ${issues}`);
  }

  const context: ToolContext = {
    signal: options.signal,
    callId,
    // Equal across re-runs of the same call, so downstream deduplication works.
    idempotencyKey: previous?.idempotencyKey ?? `${options.runId}:${callId}`,
    runId: options.runId,
    agentId: options.agentId,
    ...(options.blackboard ? { blackboard: options.blackboard } : {}),
  };

  if (previous?.status === 'intent' && !decision) {
    // The process died while this call was in flight: its outcome is unknown.
    if (found.effect === 'irreversible') {
      throw new TroupeError(ErrorCode.APPROVAL_REQUIRED, `irreversible tool "${found.name}" was interrupted; its outcome is unknown, so it waits for a human`, {
        details: { callId, tool: found.name, args: parsed.data, reason: 'outcome-unknown', retryable: false },
      });
    }
    if (found.effect === 'compensatable') await found.compensate!(parsed.data, context);
  }

  await options.recordIntent({
    callId,
    kind: 'tool',
    status: 'intent',
    name: found.name,
    args: parsed.data,
    idempotencyKey: context.idempotencyKey,
    ts: options.now(),
  });

  try {
    const value = await found.run(parsed.data, context);
    return msg.tool(call.id, call.name, toolContent(value));
  } catch (error) {
    // A stopping run is not a tool failure: let the invocation die and re-run on resume.
    if (options.signal.aborted) throw error;
    return refuse(`error: ${error instanceof Error ? error.message : String(error)}`);
  }
}
