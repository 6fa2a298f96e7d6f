import { z } from 'zod';

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
  runId: string;
  agentId: string;
  status: 'pending' | 'approved' | 'rejected';
  createdAt: number;
  decidedAt?: number;
  decision?: ApprovalDecision;
}

/** A human's answer. */
export const ApprovalDecisionSchema = z.strictObject({
  decision: z.enum(['approve', 'reject']),
  /** Why (shown to the model on reject, kept in the audit trail). */
  reason: z.string().max(2000).optional(),
  /** Approve with these arguments instead of the model's (validated against the tool's schema). */
  args: z.unknown().optional(),
  /**
   * For an outcome-unknown call the human checked: it did happen, and this was its result.
   * The call is recorded as done and not run again.
   */
  result: z.unknown().optional(),
});

/** A human's answer to an {@link ApprovalRequest}. */
export type ApprovalDecision = z.infer<typeof ApprovalDecisionSchema>;

/**
 * A decision as the agent keeps it: bound to the approval that carried it. A tool intent
 * written under a decision records that approval's id, so a crash while the approved call
 * runs is seen on resume as "this decision was already used" and the call is parked again
 * instead of being run a second time.
 */
export type RecordedDecision = ApprovalDecision & { approvalId?: string };

/** The message type that carries a decision to the waiting agent. */
export const APPROVAL_DECISION = 'approval.decision';

/** Payload of an {@link APPROVAL_DECISION} envelope. */
export interface ApprovalDecisionPayload {
  approvalId: string;
  callId: string;
  decision: ApprovalDecision;
}
