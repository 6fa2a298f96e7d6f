import { createHash } from 'node:crypto';
import { decode } from './codec.js';
import { layout } from './layout.js';
import type { Storage, StorageOp } from './storage.js';

/**
 * What an audit record commits to besides its facts: the sha256 of values its batch wrote
 * that stay as written, so `verify` also shows them edited afterwards. Only values no later
 * batch rewrites are committed, or an honest later write would look like tampering:
 *
 * - checkpoint manifests (`ckpt:`) and the parts they are assembled from: actor records
 *   (`actor:`), conversation log entries and segments (`log:`, `logseg:`), each written once;
 * - journal entries (`jrnl:`) and mailbox entries (`mbox:`), written once each;
 * - effect-ledger entries once `done` (the call's recorded result);
 * - the run index record in the batch that ends the run (its status and output), with the
 *   checkpoint it names: a record naming a later checkpoint was rewritten by a later batch
 *   without audited facts and is not checked (`superseded`).
 *
 * A value no longer stored is not a failure (retention prunes checkpoints, runs are
 * deleted), only counted (`absent`).
 */

/** One committed value: its sha256 (hex), and for a run record the checkpoint it named. */
export interface StateCommitment {
  sha256: string;
  checkpoint?: number;
}

/** Committed values by key, as stored in {@link AuditRecord.state}. */
export type CommittedState = Record<string, StateCommitment>;

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

const decodeOr = (bytes: Uint8Array): unknown => {
  try {
    return decode(bytes, Infinity);
  } catch {
    return undefined;
  }
};

const TERMINAL = new Set(['run.completed', 'run.failed']);

/** Keys whose value no batch writes twice (a pruned or packed one is gone, never rewritten). */
const writtenOnce = (key: string) =>
  layout.isCheckpoint(key) || layout.isActor(key) || layout.isLogEntry(key) || layout.isLogSegment(key) || layout.isJournal(key) || layout.isMailbox(key);

/** The commitments of a batch of `ops` whose audited facts are of `kinds`. */
export function committedState(ops: readonly StorageOp[], kinds: readonly string[]): CommittedState {
  const ends = kinds.some((kind) => TERMINAL.has(kind));
  const out: CommittedState = {};
  for (const op of ops) {
    if (op.type !== 'put') {
      delete out[op.key];
      continue;
    }
    if (writtenOnce(op.key)) out[op.key] = { sha256: sha256(op.value) };
    else if (layout.isLedger(op.key)) {
      if ((decodeOr(op.value) as { status?: unknown } | undefined)?.status === 'done') out[op.key] = { sha256: sha256(op.value) };
      else delete out[op.key];
    } else if (ends && layout.isRun(op.key)) {
      const checkpoint = (decodeOr(op.value) as { checkpoint?: unknown } | undefined)?.checkpoint;
      out[op.key] = { sha256: sha256(op.value), ...(typeof checkpoint === 'number' ? { checkpoint } : {}) };
    }
  }
  return out;
}

/** Whether `value` is a {@link CommittedState} as stored. */
export function isCommittedState(value: unknown): value is CommittedState {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  return Object.values(value).every((c: StateCommitment) => typeof c === 'object' && c !== null && typeof c.sha256 === 'string' && (c.checkpoint === undefined || typeof c.checkpoint === 'number'));
}

/** What {@link checkState} found. */
export interface StateCheck {
  checked: number;
  absent: number;
  superseded: number;
  /** The first value that is not what was committed, with the record that committed it. */
  altered?: { key: string; seq: number };
}

/** Compares the stored values with the newest commitment of each key (`latest`: key → record seq and commitment). */
export async function checkState(storage: Storage, latest: ReadonlyMap<string, { seq: number; commitment: StateCommitment }>): Promise<StateCheck> {
  const result: StateCheck = { checked: 0, absent: 0, superseded: 0 };
  for (const [key, { seq, commitment }] of latest) {
    const value = await storage.get(key);
    if (value === undefined) {
      result.absent++;
      continue;
    }
    if (sha256(value) === commitment.sha256) {
      result.checked++;
      continue;
    }
    if (commitment.checkpoint !== undefined) {
      const now = (decodeOr(value) as { checkpoint?: unknown } | undefined)?.checkpoint;
      if (typeof now === 'number' && now > commitment.checkpoint) {
        result.superseded++;
        continue;
      }
    }
    result.altered = { key, seq };
    return result;
  }
  return result;
}
