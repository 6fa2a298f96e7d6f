/**
 * The invariants of a crash trial (bench/crash-trials.ts), as pure functions of what is left
 * when every process has stopped: the world file, and each run's record, effect ledger and
 * approvals. Effects are counted per idempotency key; a key is `<runId>:<callId>` of the run
 * that first made the call (a fork reuses its source's key only for a call it inherited).
 */
import type { ApprovalRecord } from '../core/approvals.js';
import type { ToolMessage } from '../core/messages.js';
import type { LedgerEntry, RunRecord } from '../core/run-store.js';
import type { Effect } from '../examples/order-crew.js';

/** The effect each world-changing tool of the order crew writes. */
export const EFFECT_OF: Record<string, Effect['kind']> = { reserve_stock: 'reserve', hold_payment: 'hold', send_confirmation: 'email' };

/** Everything durable about one run once its trial is over. */
export interface RunFacts {
  runId: string;
  record: RunRecord | undefined;
  ledger: LedgerEntry[];
  /** Approvals of this run, in any status. */
  approvals: ApprovalRecord[];
}

/** A run driven by the harness, with what it saw between commands. */
export interface DrivenRun extends RunFacts {
  /** `forkedFrom.runId` of a fork. */
  source?: string;
  /**
   * Approvals approved to run (no `--result`) whose call was then killed while it ran: after
   * the kill the approval was `approved`, and the call's ledger entry an intent written after
   * the decision, with no result.
   */
  interrupted: string[];
  /** The idempotency key the human looked up in the world, per approval decided. */
  decidedKeys: Record<string, string>;
}

/** What a fork started from. */
export interface ForkPoint {
  source: string;
  at: number;
  /** The source's ledger (complete: the source had finished). */
  sourceLedger: LedgerEntry[];
  /** Tool calls an agent was `acting` on at the checkpoint: their intent was already written. */
  inFlight: Array<{ callId: string; tool: string }>;
  /** Whether an agent was in `awaitingApproval` at the checkpoint. */
  awaitingApproval: boolean;
  /** The world just before the fork command first ran. */
  effectsBefore: Effect[];
}

export interface TrialAudit {
  duplicatedIrreversible: number;
  duplicatedIdempotent: number;
  openHoldsBeyondOne: number;
  lostAcknowledgedWrites: number;
  duplicatedAfterApproval: number;
  approvedCallsInterrupted: number;
  reparkedAfterApprove: number;
  approvedCallsRerunWithoutParking: number;
  rejections: number;
  rejectedCallsWithEffect: number;
  rejectionsNotToldToModel: number;
  forkRedidReplayedCalls: number;
  forkRepeatedInFlightCalls: { email: number; reserve: number };
  unexpectedOutputs: number;
  /** Runs that ended `completed`. */
  completedRuns: number;
}

const isError = (result: unknown) => (result as ToolMessage | undefined)?.isError === true;
const REJECTED = 'error: not executed: rejected by a human';
const toldRejected = (entry: LedgerEntry | undefined) =>
  entry?.status === 'done' && isError(entry.result) && ((entry.result as ToolMessage).content ?? '').startsWith(REJECTED);

/** Approvals of one call, oldest first. */
function byCall(approvals: ApprovalRecord[]): Map<string, ApprovalRecord[]> {
  const calls = new Map<string, ApprovalRecord[]>();
  for (const a of [...approvals].sort((x, y) => x.createdAt - y.createdAt)) calls.set(a.callId, [...(calls.get(a.callId) ?? []), a]);
  return calls;
}

const approvedToRun = (a: ApprovalRecord) => a.status === 'approved' && a.decision?.result === undefined;

export function auditTrial(input: { effects: Effect[]; runs: DrivenRun[]; fork?: ForkPoint; outputs: { confirmed: string; unconfirmed: string } }): TrialAudit {
  const { effects, runs, fork } = input;
  const count = (kind: Effect['kind'], key: string, list = effects) => list.filter((e) => e.kind === kind && e.key === key).length;
  const keys = (kind: Effect['kind']) => [...new Set(effects.filter((e) => e.kind === kind).map((e) => e.key))];
  const surplus = (kind: Effect['kind'], key: string) => Math.max(0, count(kind, key) - 1);
  /** The keys a call of `run` may have written under: its own, or its source's for an inherited call. */
  const keysOf = (run: DrivenRun, callId: string) => [`${run.runId}:${callId}`, ...(run.source ? [`${run.source}:${callId}`] : [])];

  const audit: TrialAudit = {
    duplicatedIrreversible: keys('email').reduce((n, k) => n + surplus('email', k), 0),
    duplicatedIdempotent: keys('reserve').reduce((n, k) => n + surplus('reserve', k), 0),
    openHoldsBeyondOne: 0,
    lostAcknowledgedWrites: 0,
    duplicatedAfterApproval: 0,
    approvedCallsInterrupted: 0,
    reparkedAfterApprove: 0,
    approvedCallsRerunWithoutParking: 0,
    rejections: 0,
    rejectedCallsWithEffect: 0,
    rejectionsNotToldToModel: 0,
    forkRedidReplayedCalls: 0,
    forkRepeatedInFlightCalls: { email: 0, reserve: 0 },
    unexpectedOutputs: 0,
    completedRuns: 0,
  };

  // Payment holds stay open by design (nothing releases a placed order), at most one per run:
  // grouped by the run id in the key, holds minus releases.
  const openByRun = new Map<string, number>();
  for (const key of keys('hold')) {
    const owner = key.slice(0, key.indexOf(':'));
    openByRun.set(owner, (openByRun.get(owner) ?? 0) + count('hold', key) - count('release', key));
  }
  for (const open of openByRun.values()) audit.openHoldsBeyondOne += Math.max(0, open - 1);

  const approvedKeys = new Set<string>();
  const approvedKeysToRun = new Set<string>();
  const rejectedKeys: string[] = [];
  for (const run of runs) {
    if (run.record?.status === 'completed') audit.completedRuns++;
    // A write is acknowledged once its result is in the ledger; its effect must be in the world.
    for (const entry of run.ledger) {
      const kind = entry.kind === 'tool' && entry.status === 'done' && !isError(entry.result) ? EFFECT_OF[entry.name] : undefined;
      if (!kind) continue;
      const present = keysOf(run, entry.callId).reduce((n, k) => n + count(kind, k) - (kind === 'hold' ? count('release', k) : 0), 0);
      if (present < 1) audit.lostAcknowledgedWrites++;
    }

    for (const [callId, approvals] of byCall(run.approvals)) {
      const decided = approvals.filter((a) => a.status !== 'pending');
      for (const a of decided) {
        const key = run.decidedKeys[a.id];
        if (key) approvedKeys.add(`${EFFECT_OF[a.tool] ?? a.tool}\u0000${key}`);
      }
      // A call approved to run, then interrupted, must be parked again: a later approval of it.
      for (let i = 1; i < approvals.length; i++) if (approvedToRun(approvals[i - 1]!)) audit.reparkedAfterApprove++;
      for (const id of run.interrupted) {
        const a = approvals.find((x) => x.id === id);
        if (!a) continue;
        audit.approvedCallsInterrupted++;
        const reparked = approvals.some((b) => b.createdAt > (a.decidedAt ?? a.createdAt));
        const entry = run.ledger.find((e) => e.callId === callId);
        if (!reparked && entry?.status === 'done') audit.approvedCallsRerunWithoutParking++;
      }
      // The last decision on a call is what the model was told.
      const last = decided.at(-1);
      if (last?.status === 'rejected') {
        audit.rejections++;
        const kind = EFFECT_OF[last.tool];
        const key = run.decidedKeys[last.id];
        if (kind && key) rejectedKeys.push(`${kind}\u0000${key}`);
        if (!toldRejected(run.ledger.find((e) => e.callId === callId))) audit.rejectionsNotToldToModel++;
      } else if (last?.status === 'approved') {
        const key = run.decidedKeys[last.id];
        if (key) approvedKeysToRun.add(`${EFFECT_OF[last.tool] ?? last.tool}\u0000${key}`);
      }
    }

    if (run.record?.status === 'completed') {
      const confirmation = run.ledger.find((e) => e.kind === 'tool' && e.name === 'send_confirmation');
      const expected = toldRejected(confirmation) ? input.outputs.unconfirmed : input.outputs.confirmed;
      if (run.record.output !== expected) audit.unexpectedOutputs++;
    }
  }
  // A fork keeps the key of a call in flight at its point: a human may reject the call in
  // the source run and approve it in the fork, whose effect then carries that key. Only an
  // effect no run's human approved breaks a rejection.
  for (const entry of rejectedKeys) {
    const [kind, key] = entry.split('\u0000') as [Effect['kind'], string];
    if (count(kind, key) > 0 && !approvedKeysToRun.has(entry)) audit.rejectedCallsWithEffect++;
  }
  for (const entry of approvedKeys) {
    const [kind, key] = entry.split('\u0000') as [Effect['kind'], string];
    audit.duplicatedAfterApproval += surplus(kind, key);
  }

  if (fork) {
    const forkRun = runs.find((r) => r.source === fork.source);
    if (forkRun) {
      const f = forkRun.runId;
      // Replayed work: a result the source had recorded by the fork point is reused by the fork,
      // which must not do that effect again, under its own key or under the source's.
      for (const entry of fork.sourceLedger) {
        const kind = entry.kind === 'tool' && entry.status === 'done' && !isError(entry.result) ? EFFECT_OF[entry.name] : undefined;
        if (!kind || (entry.checkpoint ?? Infinity) > fork.at) continue;
        const sourceKey = `${fork.source}:${entry.callId}`;
        const grew = (k: Effect['kind']) => count(k, sourceKey) > count(k, sourceKey, fork.effectsBefore);
        if (count(kind, `${f}:${entry.callId}`) > 0 || grew(kind) || (kind === 'hold' && grew('release'))) audit.forkRedidReplayedCalls++;
      }
      // In-flight work: a call the source had started before the fork point (its intent is in
      // the fork's past) and that did happen in the world must not happen again for the fork.
      for (const call of fork.inFlight) {
        const kind = EFFECT_OF[call.tool];
        if (kind !== 'email' && kind !== 'reserve') continue;
        if (count(kind, `${fork.source}:${call.callId}`) > 0 && count(kind, `${f}:${call.callId}`) > 0) audit.forkRepeatedInFlightCalls[kind]++;
      }
    }
  }
  return audit;
}
