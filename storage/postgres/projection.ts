import type { PoolClient } from 'pg';
import { z } from 'zod';
import { decode } from '../../core/codec.js';
import { ErrorCode, TroupeError } from '../../core/errors.js';
import { layout } from '../../core/layout.js';
import type { StorageOp } from '../../core/storage.js';

/**
 * The SQL-readable projection of a batch: the run index records and approvals it writes or
 * deletes, as rows of `troupe_runs` and `troupe_approvals`, written in the batch's own
 * transaction. Keys are recognised and split by core/layout.ts, values read with
 * core/codec.ts; the fields a row takes are checked here, because a record that does not
 * have them is not one the kernel wrote.
 * @module
 */

const RunRowSchema = z.object({
  id: z.string(),
  crew: z.string(),
  version: z.string().optional(),
  source: z.string().optional(),
  status: z.string(),
  input: z.string().optional(),
  output: z.string().optional(),
  error: z.unknown().optional(),
  startedAt: z.number(),
  updatedAt: z.number(),
  checkpoint: z.number().int(),
  resumes: z.number().int(),
  forkedFrom: z.object({ runId: z.string() }).loose().optional(),
  part: z.object({ origin: z.string() }).loose().optional(),
  owner: z.string().optional(),
  epoch: z.number().int().optional(),
});

const ApprovalRowSchema = z.object({
  id: z.string(),
  runId: z.string(),
  agentId: z.string(),
  tool: z.string(),
  callId: z.string(),
  reason: z.string(),
  status: z.string(),
  message: z.string().optional(),
  createdAt: z.number(),
  decidedAt: z.number().optional(),
  decision: z.object({ decision: z.string() }).loose().optional(),
});

/** What a batch changes in the projection, ready for its SQL. */
export interface Projection {
  runs: Array<z.infer<typeof RunRowSchema>>;
  deletedRuns: string[];
  approvals: Array<z.infer<typeof ApprovalRowSchema>>;
  deletedApprovals: string[];
  /** Some run now waits for a node to take it (submitted without an owner). */
  runsAvailable: boolean;
  /** Runs this batch wrote mail for (rows of `inq:<run>:`). */
  mailFor: Set<string>;
}

function record<T>(schema: z.ZodType<T>, op: Extract<StorageOp, { type: 'put' }>, what: string): T {
  const parsed = schema.safeParse(decode(op.value, Infinity));
  if (!parsed.success) {
    throw new TroupeError(ErrorCode.STORAGE_FAILED, `refusing to write ${op.key}: it is not ${what} (${parsed.error.issues[0]?.message ?? 'invalid'} at ${parsed.error.issues[0]?.path.join('.') ?? ''})`, {
      details: { key: op.key },
    });
  }
  return parsed.data;
}

/** The projection changes of `ops`, which hold at most one op per key (the last of the batch). */
export function projectionOf(ops: Iterable<StorageOp>): Projection {
  const out: Projection = { runs: [], deletedRuns: [], approvals: [], deletedApprovals: [], runsAvailable: false, mailFor: new Set() };
  for (const op of ops) {
    if (layout.isRun(op.key)) {
      if (op.type === 'del') out.deletedRuns.push(layout.runIdOf(op.key));
      else {
        const run = record(RunRowSchema, op, 'a run record');
        out.runs.push(run);
        if (run.owner === undefined && (run.status === 'running' || run.status === 'waiting')) out.runsAvailable = true;
      }
    } else if (layout.isInboundMail(op.key)) {
      if (op.type === 'put') out.mailFor.add(layout.inboundMailRunOf(op.key));
    } else if (layout.isApproval(op.key)) {
      if (op.type === 'del') out.deletedApprovals.push(layout.approvalIdOf(op.key));
      else out.approvals.push(record(ApprovalRowSchema, op, 'an approval record'));
    }
  }
  return out;
}

// jsonb refuses U+0000 and lone surrogates; the key-value row keeps the exact text, the
// projection (for people) a readable one.
const NOT_JSONB = /\u0000|\p{Cs}/gu;
const asJsonb = (rows: unknown) => JSON.stringify(rows, (_key, value: unknown) => (typeof value === 'string' ? value.replace(NOT_JSONB, '\uFFFD') : value));

const time = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());

/** Channel of the notifications that a run may be free to take. */
export const RUNS_CHANNEL = 'troupe_runs';
/** Channel of the notifications that mail was written for a run (the payload is its id). */
export const MAIL_CHANNEL = 'troupe_mail';

/** Writes `projection` through `client`, inside the caller's transaction. */
export async function writeProjection(client: PoolClient, projection: Projection): Promise<void> {
  if (projection.deletedRuns.length > 0) {
    await client.query('DELETE FROM troupe_runs WHERE run_id = ANY($1::text[])', [projection.deletedRuns]);
  }
  if (projection.runs.length > 0) {
    const rows = projection.runs.map((r) => ({
      run_id: r.id,
      crew: r.crew,
      version: r.version ?? null,
      status: r.status,
      owner: r.owner ?? null,
      epoch: r.epoch ?? null,
      part_of: r.part?.origin ?? null,
      started_at: time(r.startedAt),
      updated_at: time(r.updatedAt),
      checkpoint: r.checkpoint,
      resumes: r.resumes,
      source: r.source ?? null,
      input: r.input ?? null,
      output: r.output ?? null,
      error: r.error ?? null,
      forked_from: r.forkedFrom?.runId ?? null,
    }));
    await client.query(
      `INSERT INTO troupe_runs AS t SELECT * FROM jsonb_populate_recordset(NULL::troupe_runs, $1::jsonb)
       ON CONFLICT (run_id) DO UPDATE SET crew = EXCLUDED.crew, version = EXCLUDED.version, status = EXCLUDED.status, owner = EXCLUDED.owner,
         epoch = EXCLUDED.epoch, part_of = EXCLUDED.part_of, started_at = EXCLUDED.started_at, updated_at = EXCLUDED.updated_at,
         checkpoint = EXCLUDED.checkpoint, resumes = EXCLUDED.resumes, source = EXCLUDED.source, input = EXCLUDED.input,
         output = EXCLUDED.output, error = EXCLUDED.error, forked_from = EXCLUDED.forked_from`,
      [asJsonb(rows)],
    );
    // Every recorded run has a claim row, so a node can lock it (FOR UPDATE SKIP LOCKED) to take the run.
    await client.query('INSERT INTO troupe_claims (run_id) SELECT unnest($1::text[]) ON CONFLICT (run_id) DO NOTHING', [projection.runs.map((r) => r.id)]);
  }
  if (projection.deletedApprovals.length > 0) {
    await client.query('DELETE FROM troupe_approvals WHERE approval_id = ANY($1::text[])', [projection.deletedApprovals]);
  }
  if (projection.approvals.length > 0) {
    const rows = projection.approvals.map((a) => ({
      approval_id: a.id,
      run_id: a.runId,
      agent_id: a.agentId,
      tool: a.tool,
      call_id: a.callId,
      reason: a.reason,
      status: a.status,
      message: a.message ?? null,
      decision: a.decision?.decision ?? null,
      created_at: time(a.createdAt),
      decided_at: time(a.decidedAt),
    }));
    await client.query(
      `INSERT INTO troupe_approvals AS t SELECT * FROM jsonb_populate_recordset(NULL::troupe_approvals, $1::jsonb)
       ON CONFLICT (approval_id) DO UPDATE SET run_id = EXCLUDED.run_id, agent_id = EXCLUDED.agent_id, tool = EXCLUDED.tool, call_id = EXCLUDED.call_id,
         reason = EXCLUDED.reason, status = EXCLUDED.status, message = EXCLUDED.message, decision = EXCLUDED.decision,
         created_at = EXCLUDED.created_at, decided_at = EXCLUDED.decided_at`,
      [asJsonb(rows)],
    );
  }
  // Delivered at commit, and only then: a node woken by it finds the run.
  if (projection.runsAvailable) await client.query('SELECT pg_notify($1, $2)', [RUNS_CHANNEL, 'submitted']);
  if (projection.mailFor.size > 0) await client.query('SELECT pg_notify($1, r) FROM unnest($2::text[]) AS r', [MAIL_CHANNEL, [...projection.mailFor]]);
}
