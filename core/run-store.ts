import type { ApprovalRecord } from './approvals.js';
import { decode, encode } from './codec.js';
import type { Envelope } from './envelope.js';
import { ErrorCode, TroupeError, type SerializedError } from './errors.js';
import { checkpointMarks, checkpointStates, fillDeferredLog, fillDeferredLogs, latestCheckpointHead, readCheckpoint, readLatestCheckpoint, type Checkpoint, type CheckpointHint } from './checkpoints.js';
import type { DeferredLog } from './snapshot-parts.js';
import { layout } from './layout.js';
import type { KeyRange, Storage, StorageOp } from './storage.js';
import type { ToolEffect } from './tool.js';
import type { RequestPrint } from './replay/request-print.js';

/**
 * Typed records of a run and typed reads over the storage layout (core/layout.ts owns the
 * keys; core/checkpoints.ts owns how a checkpoint is taken apart and rebuilt).
 */

export { CHECKPOINT_SCHEMA_VERSION, type Checkpoint } from './checkpoints.js';
export { assertRunId } from './layout.js';

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
  /** The owner (a node's owner id) whose claim this record was written under. */
  owner?: string;
  /** The epoch of that claim (see `Storage.claim`); a later holder writes a higher one. */
  epoch?: number;
  /** The run's trace context (core/telemetry.ts): every node and every resume of the run continues it. */
  trace?: Record<string, string>;
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
  | 'approval.decided'
  | 'permission';

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
  /** For a result whose intent was written earlier: the checkpoint whose batch wrote the intent. */
  intentAt?: number;
  /** A tool call's declared effect, set once its intent was written (it touched the world). */
  effect?: ToolEffect;
  /** The approval under which this intent was written: a crash then parks the call again. */
  approvalId?: string;
  /** The earlier attempt's call whose recorded effect this call took over. */
  inheritedFrom?: string;
  /** Names of the secrets the call resolved; a resumed run resolves them again to redact. */
  secrets?: string[];
  /** A model call's request, as a replay compares it (absent in entries written before replay existed). */
  request?: RequestPrint;
}

/**
 * Key builders of the layout 1 names, kept for callers outside the kernel.
 * @deprecated use `layout` from core/layout.ts.
 */
export const keys = {
  run: layout.run,
  checkpoint: layout.checkpoint,
  journal: layout.journal,
  ledger: layout.ledger,
  mailbox: layout.mailbox,
  approval: layout.approval,
  outbox: layout.routed,
};

/** The order runs are listed in everywhere (API, CLI, inspector): newest first, then by id. */
export function newestRunFirst(a: Pick<RunRecord, 'startedAt' | 'id'>, b: Pick<RunRecord, 'startedAt' | 'id'>): number {
  return b.startedAt - a.startedAt || b.id.localeCompare(a.id);
}

/** A put op with a msgpack-encoded value. */
export function put(key: string, value: unknown): StorageOp {
  return { type: 'put', key, value: encode(value) };
}

async function collect<T>(storage: Storage, range: KeyRange): Promise<T[]> {
  const out: T[] = [];
  for await (const [, value] of storage.entries(range)) out.push(decode(value, Infinity) as T);
  return out;
}

/** A row of a run's inbound mail as read back: decoded, or why it could not be. */
export interface StoredMail {
  key: string;
  value: unknown;
  unreadable?: Error;
}

/** Typed reads over the layout. */
export function createRunStore(storage: Storage) {
  return {
    storage,
    async getRun(runId: string): Promise<RunRecord | undefined> {
      const raw = await storage.get(layout.run(runId));
      return raw && (decode(raw, Infinity) as RunRecord);
    },
    async requireRun(runId: string): Promise<RunRecord> {
      const record = await this.getRun(runId);
      if (!record) throw new TroupeError(ErrorCode.RUN_NOT_FOUND, `no run "${runId}" in ${storage.location}`, { details: { runId } });
      return record;
    },
    listRuns: () => collect<RunRecord>(storage, layout.runs()),
    listApprovals: () => collect<ApprovalRecord>(storage, layout.approvals()),
    /**
     * The approvals of one run, through its index (`apprun:`): reads what the run has, not
     * every approval of the database. Complete for runs whose checkpoints say so
     * ({@link Checkpoint.approvalIndex}); runs checkpointed before the index existed need
     * {@link listApprovals}.
     */
    async runApprovals(runId: string): Promise<ApprovalRecord[]> {
      const ids: string[] = [];
      for await (const [key] of storage.entries(layout.runApprovals(runId))) ids.push(layout.runApprovalIdOf(runId, key));
      const records = await Promise.all(ids.map((id) => this.getApproval(id)));
      return records.filter((r): r is ApprovalRecord => r !== undefined && r.runId === runId);
    },
    async getApproval(approvalId: string): Promise<ApprovalRecord | undefined> {
      const raw = await storage.get(layout.approval(approvalId));
      return raw && (decode(raw, Infinity) as ApprovalRecord);
    },
    /** Checkpoint `seq` of a run, rebuilt whole (message bodies in place). */
    checkpoint: (runId: string, seq: number): Promise<Checkpoint | undefined> => readCheckpoint(storage, runId, seq),
    /** The newest checkpoint of a run, rebuilt whole. */
    latestCheckpoint: (runId: string, hint?: CheckpointHint): Promise<Checkpoint | undefined> => readCheckpoint(storage, runId, 'latest', hint),
    /** Reads a conversation a restore deferred back into its array (see fillDeferredLog). */
    fillDeferred: (runId: string, seq: number, deferred: DeferredLog) => fillDeferredLog(storage, runId, seq, deferred),
    /** `checkpoint` with every conversation it deferred read back. */
    fillCheckpoint: (runId: string, checkpoint: Checkpoint) => fillDeferredLogs(storage, runId, checkpoint),
    /** Schema and machine of the newest checkpoint, without rebuilding it. */
    latestCheckpointHead: (runId: string) => latestCheckpointHead(storage, runId),
    /** The latest checkpoint, with its head as soon as the manifest is read (see readLatestCheckpoint). */
    readLatest: (runId: string, hint?: CheckpointHint) => readLatestCheckpoint(storage, runId, hint),
    /** Each checkpoint of a run with the state of every actor at it, oldest first. */
    checkpointStates: (runId: string, legacyRootId: string) => checkpointStates(storage, runId, legacyRootId),
    /** Each checkpoint's seq, time and newest journal entry, oldest first (manifests only). */
    checkpointMarks: (runId: string) => checkpointMarks(storage, runId),
    journal: (runId: string) => collect<JournalEntry>(storage, layout.journals(runId)),
    /** Journal entries with a sequence number in `after < seq <= upTo`. */
    journalBetween: (runId: string, after: number, upTo = Infinity) =>
      collect<JournalEntry>(storage, { gte: layout.journal(runId, after + 1), lt: Number.isFinite(upTo) ? layout.journal(runId, upTo + 1) : layout.journals(runId).lt! }),
    ledger: (runId: string) => collect<LedgerEntry>(storage, layout.ledgers(runId)),
    /** One effect-ledger entry of a run, by its call id. */
    async ledgerEntry(runId: string, callId: string): Promise<LedgerEntry | undefined> {
      const raw = await storage.get(layout.ledger(runId, callId));
      return raw && (decode(raw, Infinity) as LedgerEntry);
    },
    outbox: (runId: string) => collect<Envelope>(storage, layout.routeds(runId)),
    /**
     * Rows of mail other runs and nodes wrote for `runId`, in each sender's order, decoded
     * but not yet checked: whoever accepts them validates each (a row is another writer's).
     */
    async inboundMail(runId: string): Promise<StoredMail[]> {
      const out: StoredMail[] = [];
      for await (const [key, raw] of storage.entries(layout.inboundMails(runId))) {
        try {
          out.push({ key, value: decode(raw, Infinity) });
        } catch (error) {
          out.push({ key, value: undefined, unreadable: error as Error });
        }
      }
      return out;
    },
    /** The runs that have mail waiting, each once. */
    async runsWithMail(): Promise<string[]> {
      const runs: string[] = [];
      // One row read per run, skipping past the rest of its mail.
      for (let range = layout.allInboundMail(); ; ) {
        let next: string | undefined;
        for await (const [key] of storage.entries({ ...range, limit: 1 })) next = key;
        if (next === undefined) return runs;
        const runId = layout.inboundMailRunOf(next);
        runs.push(runId);
        range = layout.inboundMailAfterRun(runId);
      }
    },
    /** Envelopes for `actorId` with a sequence number above `after`. */
    mailboxAfter: (runId: string, actorId: string, after: number) => collect<Envelope>(storage, layout.mailboxAfter(runId, actorId, after)),
  };
}

/** The typed view returned by {@link createRunStore}. */
export type RunStore = ReturnType<typeof createRunStore>;
