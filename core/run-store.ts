import type { ApprovalRecord } from './approvals.js';
import { hydrate } from './blobs.js';
import { decode, encode } from './codec.js';
import type { Envelope } from './envelope.js';
import { ErrorCode, TroupeError, type SerializedError } from './errors.js';
import { prefixRange, seqKey, type Storage, type StorageOp } from './storage.js';
import type { ToolEffect } from './tool.js';

/**
 * The persistent layout of runs on a {@link Storage}. Keys (all sortable strings):
 * - `run:<runId>`                          run index record
 * - `ckpt:<runId>:<seq>`                   checkpoints, oldest first (kept: history and fork)
 * - `jrnl:<runId>:<seq>`                   journal: what happened, in order
 * - `ledger:<runId>:<callId>`              effect ledger: intent/result of model and tool calls
 * - `mbox:<runId>:<actorId>:<seq>`         mailbox entries (delivered up to the checkpoint cursor)
 * - `approval:<approvalId>`                human approvals, across runs
 * - `blob:<sha256>`                        long strings of snapshots, content-addressed (core/blobs.ts)
 * - `rout:<runId>:<envelopeId>`            envelopes leaving the run, until the node routed them
 * - `audit:<seq>`                          the node's hash-chained audit log (core/audit-log.ts)
 * - `outbox:<node>:<seq>`, `outseq:<node>`, `inbox:<node>`, `transport:epoch`
 *                                          the WebSocket transport's delivery state
 */

/** The version of the checkpoint layout written by this code. */
export const CHECKPOINT_SCHEMA_VERSION = 1;

/** Where a run is in its life. */
export type RunStatus = 'running' | 'waiting' | 'completed' | 'failed';

/** One row of the run index. */
export interface RunRecord {
  id: string;
  /** Id of the crew definition the run executes. */
  crew: string;
  /** Version of that crew's machine when the run started. */
  version: string;
  /** Module the crew was loaded from (the CLI resumes by importing it again). */
  source?: string;
  status: RunStatus;
  input: string;
  output?: string;
  error?: SerializedError;
  startedAt: number;
  updatedAt: number;
  /** Sequence number of the newest checkpoint. */
  checkpoint: number;
  /** How many times the run was resumed after its process stopped. */
  resumes: number;
  /** Set on a fork: the run and checkpoint it started from. */
  forkedFrom?: { runId: string; checkpoint: number };
  /** Set when this node hosts only some actors of a run whose root is on `origin`. */
  part?: { origin: string; actors: string[] };
  /** The run's trace context (core/telemetry.ts): every node and every resume of the run continues it. */
  trace?: Record<string, string>;
}

/** A consistent point of a run: root snapshot (children included) plus mailbox positions. */
export interface Checkpoint {
  seq: number;
  ts: number;
  schemaVersion: number;
  machine: { id: string; version: string };
  snapshot: unknown;
  /** Per actor: sequence number of the last envelope delivered to it. */
  cursors: Record<string, number>;
  /** Per actor: sequence number of the last envelope enqueued for it. */
  mailboxSeq: Record<string, number>;
  /** Sequence number of the newest journal entry at this point. */
  journalSeq: number;
  /** Model use so far (steps reserved, tokens, cost), for budgets that survive restarts. */
  usage?: UsageLedger;
  /** Ids of the latest envelopes accepted from outside the run, to drop redeliveries. */
  seen?: string[];
}

/** Model use of a run, in total and per agent. */
export interface UsageTotals {
  steps: number;
  tokens: number;
  cost: number;
}

/** What {@link Checkpoint.usage} holds. */
export interface UsageLedger {
  total: UsageTotals;
  agents: Record<string, UsageTotals>;
}

/** What the journal records. */
export type JournalKind =
  | 'run.started'
  | 'run.resumed'
  | 'run.completed'
  | 'run.failed'
  | 'state'
  | 'message'
  | 'model.call'
  | 'model.error'
  | 'tool.call'
  | 'approval.requested'
  | 'approval.decided';

/** One journal entry. */
export interface JournalEntry {
  seq: number;
  ts: number;
  kind: JournalKind;
  actor: string;
  data: Record<string, unknown>;
}

/** Effect-ledger entry of one model or tool call, keyed by its stable call id. */
export interface LedgerEntry {
  callId: string;
  kind: 'model' | 'tool';
  status: 'intent' | 'done';
  name: string;
  args?: unknown;
  idempotencyKey?: string;
  result?: unknown;
  ts: number;
  /** The checkpoint whose batch wrote this entry. */
  checkpoint?: number;
  /** A tool call's declared effect, set once its intent was written (it touched the world). */
  effect?: ToolEffect;
  /** The approval under which this intent was written: a crash then parks the call again. */
  approvalId?: string;
  /** The earlier attempt's call whose recorded effect this call took over. */
  inheritedFrom?: string;
  /** Names of the secrets the call resolved; a resumed run resolves them again to redact. */
  secrets?: string[];
}

const RUN_ID = /^[A-Za-z0-9_.-]{1,64}$/;

/** Throws a `TypeError` unless `runId` may be used as a run id. */
export function assertRunId(runId: string): void {
  if (!RUN_ID.test(runId)) throw new TypeError(`run id "${runId}" must match ${RUN_ID}`);
}

/** Key builders; the single place that knows the layout. */
export const keys = {
  run: (runId: string) => `run:${runId}`,
  checkpoint: (runId: string, seq: number) => `ckpt:${runId}:${seqKey(seq)}`,
  journal: (runId: string, seq: number) => `jrnl:${runId}:${seqKey(seq)}`,
  ledger: (runId: string, callId: string) => `ledger:${runId}:${callId}`,
  mailbox: (runId: string, actorId: string, seq: number) => `mbox:${runId}:${actorId}:${seqKey(seq)}`,
  approval: (approvalId: string) => `approval:${approvalId}`,
  outbox: (runId: string, envelopeId: string) => `rout:${runId}:${envelopeId}`,
};

/** A put op with a msgpack-encoded value. */
export function put(key: string, value: unknown): StorageOp {
  return { type: 'put', key, value: encode(value) };
}

async function collect<T>(storage: Storage, prefix: string, options: { reverse?: boolean; limit?: number } = {}): Promise<T[]> {
  const out: T[] = [];
  for await (const [, value] of storage.entries(prefixRange(prefix, options))) out.push(decode(value, Infinity) as T);
  return out;
}

/** Typed reads over the layout above. */
export function createRunStore(storage: Storage) {
  const withBodies = async (checkpoint: Checkpoint): Promise<Checkpoint> => ({ ...checkpoint, snapshot: await hydrate(storage, checkpoint.snapshot) });
  return {
    storage,
    async getRun(runId: string): Promise<RunRecord | undefined> {
      const raw = await storage.get(keys.run(runId));
      return raw && (decode(raw, Infinity) as RunRecord);
    },
    async requireRun(runId: string): Promise<RunRecord> {
      const record = await this.getRun(runId);
      if (!record) throw new TroupeError(ErrorCode.RUN_NOT_FOUND, `no run "${runId}" in ${storage.location}`, { details: { runId } });
      return record;
    },
    listRuns: () => collect<RunRecord>(storage, 'run:'),
    listApprovals: () => collect<ApprovalRecord>(storage, 'approval:'),
    async getApproval(approvalId: string): Promise<ApprovalRecord | undefined> {
      const raw = await storage.get(keys.approval(approvalId));
      return raw && (decode(raw, Infinity) as ApprovalRecord);
    },
    /** Checkpoint `seq` of a run, message bodies in place. */
    async checkpoint(runId: string, seq: number): Promise<Checkpoint | undefined> {
      const raw = await storage.get(keys.checkpoint(runId, seq));
      return raw && withBodies(decode(raw, Infinity) as Checkpoint);
    },
    /** The newest checkpoint of a run, message bodies in place. */
    async latestCheckpoint(runId: string): Promise<Checkpoint | undefined> {
      const [latest] = await collect<Checkpoint>(storage, `ckpt:${runId}:`, { reverse: true, limit: 1 });
      return latest && withBodies(latest);
    },
    /** Every checkpoint of a run, oldest first; long strings stay blob references (states and ids are inline). */
    checkpoints: (runId: string) => collect<Checkpoint>(storage, `ckpt:${runId}:`),
    journal: (runId: string) => collect<JournalEntry>(storage, `jrnl:${runId}:`),
    ledger: (runId: string) => collect<LedgerEntry>(storage, `ledger:${runId}:`),
    outbox: (runId: string) => collect<Envelope>(storage, `rout:${runId}:`),
    /** Envelopes for `actorId` with a sequence number above `after`. */
    async mailboxAfter(runId: string, actorId: string, after: number): Promise<Envelope[]> {
      const out: Envelope[] = [];
      const range = { gte: keys.mailbox(runId, actorId, after + 1), lt: `mbox:${runId}:${actorId}:\uffff` };
      for await (const [, value] of storage.entries(range)) out.push(decode(value, Infinity) as Envelope);
      return out;
    },
  };
}

/** The typed view returned by {@link createRunStore}. */
export type RunStore = ReturnType<typeof createRunStore>;
