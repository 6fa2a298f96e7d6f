import { createBlobWriter } from '../../core/blobs.js';
import { decode } from '../../core/codec.js';
import { readCheckpoint } from '../../core/checkpoints.js';
import { layout, seqOf } from '../../core/layout.js';
import { put } from '../../core/run-store.js';
import type { Storage, StorageOp } from '../../core/storage.js';

/**
 * Rewrites one run of a database into layout 1, as Troupe wrote it before Kernel v2: every
 * checkpoint (`ckpt:<run>:<seq>`) holds the whole deep snapshot, with schemaVersion 1 and
 * strings of 512+ characters moved to `blob:` keys (core/blobs.ts); there are no `actor:`,
 * `log:` or `seen:` keys. Built from what the current code wrote, through `readCheckpoint`,
 * in one batch. Returns the sequence numbers of the checkpoints rewritten.
 */
export async function rewriteRunToLayout1(storage: Storage, runId: string): Promise<number[]> {
  const seqs: number[] = [];
  for await (const [key, value] of storage.entries(layout.checkpoints(runId))) {
    const raw = decode(value, Infinity) as { schemaVersion: number };
    if (raw.schemaVersion !== 2) throw new Error(`checkpoint ${key} is already of layout ${raw.schemaVersion}`);
    seqs.push(seqOf(key));
  }
  const blobs = createBlobWriter();
  const ops: StorageOp[] = [];
  // Every checkpoint is rebuilt before anything is deleted: each reads the records and logs.
  for (const seq of seqs) {
    const checkpoint = await readCheckpoint(storage, runId, seq);
    if (!checkpoint) throw new Error(`checkpoint ${seq} of ${runId} vanished`);
    const { value: snapshot, ops: blobOps } = blobs.dehydrate(checkpoint.snapshot);
    ops.push(...blobOps);
    blobs.commit(blobOps);
    ops.push(
      put(layout.checkpoint(runId, seq), {
        seq: checkpoint.seq,
        ts: checkpoint.ts,
        schemaVersion: 1,
        machine: checkpoint.machine,
        snapshot,
        cursors: checkpoint.cursors,
        mailboxSeq: checkpoint.mailboxSeq,
        journalSeq: checkpoint.journalSeq,
        usage: checkpoint.usage,
        seen: checkpoint.seen,
      }),
    );
  }
  for (const range of [layout.actors(runId), layout.logs(runId), layout.seens(runId)]) {
    for await (const [key] of storage.entries(range)) ops.push({ type: 'del', key });
  }
  await storage.write(ops);
  return seqs;
}

/** Every key of a database with its bytes, in key order (to prove nothing was written). */
export async function dump(storage: Storage): Promise<Array<[string, string]>> {
  const out: Array<[string, string]> = [];
  for await (const [key, value] of storage.entries({})) out.push([key, Buffer.from(value).toString('base64')]);
  return out;
}
