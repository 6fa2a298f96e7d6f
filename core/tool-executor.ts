import type { RecordedDecision } from './approvals.js';
import { ErrorCode, TroupeError } from './errors.js';
import { argsPreview, describeNonJson, msg, toolContent, type ToolCall, type ToolMessage } from './messages.js';
import type { LedgerEntry } from './run-store.js';
import { decide, describeDecision, type Policy, type PolicyDecision } from './policy.js';
import { resolveSecrets, type Redactor, type SecretsProvider } from './secrets.js';
import type { BlackboardAccess, Tool, ToolContext } from './tool.js';

/** Inputs of {@link executeTool}. */
export interface ExecuteToolOptions {
  call: ToolCall;
  tools: readonly Tool[];
  callId: string;
  runId: string;
  agentId: string;
  signal: AbortSignal;
  /**
   * The ledger entry left by an earlier attempt of this call (an intent without result), or
   * the interrupted intent of a failed attempt that this call inherits.
   */
  previous: LedgerEntry | undefined;
  /** A human's decision on this exact call, when it waited for one. */
  decision?: RecordedDecision | undefined;
  blackboard?: BlackboardAccess | undefined;
  /** The agent's effective permission policy; without one every tool is allowed. */
  policy?: Policy | undefined;
  /** Told every permission decision (for the audit log). */
  onPermission?(decision: PolicyDecision & { tool: string; scopes: readonly string[] }): void;
  secrets?: SecretsProvider | undefined;
  /** Told the secret values resolved for this call, before the tool runs. */
  learnSecrets?(values: string[]): void;
  /** Told when the tool threw (its `details.reason`, e.g. a refused path, is worth auditing). */
  onToolError?(error: unknown): void;
  /** Scrubs known secrets out of what the tool returns. */
  redact?: Redactor;
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
  if (call.argsError !== undefined && !(decision && decision.args !== undefined)) {
    // Arguments the provider could not read: the model sees what it sent and why it failed.
    return refuse(`error: invalid arguments for ${found.name}: ${call.argsError}; received ${argsPreview(call.args)}`);
  }
  const parsed = found.input.safeParse(decision && decision.args !== undefined ? decision.args : call.args);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    return refuse(`error: invalid arguments for ${found.name}: ${issues}`);
  }

  if (options.policy) {
    const verdict = decide(options.policy, found.scopes);
    options.onPermission?.({ ...verdict, tool: found.name, scopes: found.scopes });
    if (verdict.decision === 'deny') return refuse(`error: not permitted: ${describeDecision(verdict)}`);
    if (verdict.decision === 'ask' && !decision) {
      throw new TroupeError(ErrorCode.APPROVAL_REQUIRED, `tool "${found.name}" ${describeDecision(verdict)}`, {
        details: { callId, tool: found.name, args: parsed.data, reason: 'policy', scope: verdict.scope, rule: verdict.rule },
        retryable: false,
      });
    }
  }
  // A tool-level requirement holds with or without a policy: the policy may allow the scope,
  // the tool's author still wants a human to see each call.
  if (found.approval === 'ask' && !decision) {
    throw new TroupeError(ErrorCode.APPROVAL_REQUIRED, `tool "${found.name}" needs a human's approval for every call`, {
      details: { callId, tool: found.name, args: parsed.data, reason: 'policy', retryable: false },
    });
  }

  const context: ToolContext = {
    signal: options.signal,
    callId,
    // Equal across re-runs of the same call, so downstream deduplication works.
    idempotencyKey: previous?.idempotencyKey ?? `${options.runId}:${callId}`,
    runId: options.runId,
    agentId: options.agentId,
    ...(options.blackboard ? { blackboard: options.blackboard } : {}),
    secrets: {},
  };
  const redact = options.redact ?? (<T>(v: T) => v);

  // An intent written under this very decision means the approved call was already started
  // once and its process died: the decision is used up, and the outcome is unknown again.
  const decisionUsed = decision !== undefined && previous?.status === 'intent' && previous.approvalId === decision.approvalId;
  if (previous?.status === 'intent' && (!decision || decisionUsed)) {
    // The process died while this call was in flight: its outcome is unknown.
    if (found.effect === 'irreversible') {
      throw new TroupeError(ErrorCode.APPROVAL_REQUIRED, `irreversible tool "${found.name}" was interrupted; its outcome is unknown, so it waits for a human`, {
        details: { callId, tool: found.name, args: parsed.data, reason: 'outcome-unknown' },
        retryable: false,
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
    effect: found.effect,
    idempotencyKey: context.idempotencyKey,
    ...(decision?.approvalId !== undefined ? { approvalId: decision.approvalId } : {}),
    ...(found.secrets.length > 0 ? { secrets: [...found.secrets] } : {}),
    ts: options.now(),
  });

  try {
    if (found.secrets.length > 0) {
      if (!options.secrets) throw new TroupeError(ErrorCode.TOOL_FAILED, `tool "${found.name}" needs secrets but the node has no secrets provider`, { details: { reason: 'secret-missing' } });
      context.secrets = await resolveSecrets(options.secrets, found.secrets, options.signal);
      options.learnSecrets?.(Object.values(context.secrets));
    }
    const value = await found.run(parsed.data, context);
    // A result that is not JSON cannot be shown to the model nor persisted faithfully.
    const problem = describeNonJson(value);
    if (problem) return redact(refuse(`error: tool "${found.name}" returned ${problem}, which is not JSON; a tool must return a string or a JSON value`));
    // Secrets never enter the conversation: the model would otherwise see them, and a
    // resumed run (which only has the scrubbed copy) would diverge from this one.
    return redact(msg.tool(call.id, call.name, toolContent(value)));
  } catch (error) {
    // A stopping run is not a tool failure: let the invocation die and re-run on resume.
    if (options.signal.aborted) throw error;
    options.onToolError?.(error);
    return redact(refuse(`error: ${error instanceof Error ? error.message : String(error)}`));
  }
}
