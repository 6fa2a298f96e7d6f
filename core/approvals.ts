import type { ApprovalDecision } from './protocol.js';

// A decision's schema, its message type and payload are part of the protocol (core/protocol.ts).
export { APPROVAL_DECISION, ApprovalDecisionPayloadSchema, ApprovalDecisionSchema, type ApprovalDecision, type ApprovalDecisionPayload } from './protocol.js';

/**
 * Human decisions the runtime waits for. An approval is bound to one exact tool call (its
 * stable call id and arguments); the agent sits in `awaitingApproval` until a decision
 * arrives as an envelope, so waiting survives restarts like any other state.
 */

/** Why a call needs a human. */
export type ApprovalReason = 'outcome-unknown' | 'policy';

/** What the agent asks for, kept in its context while it waits. */
export interface ApprovalRequest {
  id: string;
  callId: string;
  tool: string;
  args: unknown;
  reason: ApprovalReason;
  message: string;
}

/** The stored record of an approval (`approval:<id>`), listed by `troupe approvals`. */
export interface ApprovalRecord extends ApprovalRequest {
  /**
   * The id the waiting actor knows the request by, when it differs from `id`: a fork's
   * agent waits on its source's request, and the fork's approval record carries it on.
   */
  requestId?: string;
  runId: string;
  agentId: string;
  status: 'pending' | 'approved' | 'rejected';
  createdAt: number;
  decidedAt?: number;
  decision?: ApprovalDecision;
}

/**
 * A decision as the agent keeps it: bound to the approval that carried it. A tool intent
 * written under a decision records that approval's id, so a crash while the approved call
 * runs is seen on resume as "this decision was already used" and the call is parked again
 * instead of being run a second time.
 */
export type RecordedDecision = ApprovalDecision & { approvalId?: string };

/**
 * The requests the actors of a restored root snapshot wait on, by actor id: the contract is
 * that an actor waiting for a human keeps its {@link ApprovalRequest} in `context.approval`
 * (the agent machine does). A run restored into a new run id (a fork) has no records for
 * them yet; the run host creates them.
 */
export function waitingRequests(snapshot: unknown): Array<{ actorId: string; request: ApprovalRequest }> {
  const children = (snapshot as { children?: Record<string, { snapshot?: { context?: { approval?: unknown } } }> })?.children ?? {};
  const out: Array<{ actorId: string; request: ApprovalRequest }> = [];
  for (const [actorId, child] of Object.entries(children)) {
    const request = child?.snapshot?.context?.approval as ApprovalRequest | null | undefined;
    if (request && typeof request.id === 'string' && typeof request.callId === 'string') out.push({ actorId, request });
  }
  return out;
}
