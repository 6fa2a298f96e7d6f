import { checkpointLayout, type Checkpoint, type Manifest } from './checkpoints.js';
import { decode } from './codec.js';
import { layout } from './layout.js';
import { forkLogOps } from './log-store.js';
import { put, type JournalEntry, type LedgerEntry, type RunRecord, type RunStore } from './run-store.js';
import type { KeyRange, StorageOp } from './storage.js';

/**
 * The ops of a new run that starts at checkpoint `checkpoint` of `source`: that checkpoint
 * becomes the new run's first, with the journal up to it, the mail not yet delivered at it
 * and the effect ledger as it stood, so the fork reuses recorded results instead of calling
 * again. Snapshots hold only run-relative addresses, which is what makes them portable to
 * another run id. The caller writes the ops through the node's write path.
 */
export async function forkOps(store: RunStore, source: RunRecord, checkpoint: Checkpoint, fork: { runId: string; now: number }): Promise<{ ops: StorageOp[]; record: RunRecord }> {
  const { storage } = store;
  const from = source.id;
  const to = fork.runId;
  const ops: StorageOp[] = [];
  const copy = async (range: KeyRange, rename: (key: string) => string, keep: (key: string, value: unknown) => boolean) => {
    for await (const [key, value] of storage.entries(range)) if (keep(key, decode(value, Infinity))) ops.push({ type: 'put', key: rename(key), value });
  };
  const swap = (key: string) => key.replace(`:${from}:`, `:${to}:`);

  // Per call, the approval its newest decision to run it was taken under, up to the fork point.
  const approvedUnder = new Map<string, string>();
  await copy(layout.journals(from), swap, (_k, e) => {
    const entry = e as JournalEntry;
    if (entry.seq > checkpoint.journalSeq) return false;
    const { callId, approvalId, decision } = entry.data ?? {};
    if (entry.kind === 'approval.decided' && decision === 'approve' && typeof callId === 'string' && typeof approvalId === 'string') approvedUnder.set(callId, approvalId);
    return true;
  });
  for await (const [key, value] of storage.entries(layout.ledgers(from))) {
    const entry = decode(value, Infinity) as LedgerEntry;
    if ((entry.checkpoint ?? Infinity) <= checkpoint.seq) ops.push({ type: 'put', key: swap(key), value });
    else if (entry.intentAt !== undefined && entry.intentAt <= checkpoint.seq) {
      // In flight at the fork point: the fork sees the intent, not the later result, and
      // treats the call as interrupted (same key; an irreversible one waits for a human).
      // The intent is the one the call had then: under the approval last given to run it
      // by then, not one the source run was given after the fork point. With the later
      // approval, the fork took the decision in its snapshot for one not yet used and ran an
      // irreversible call the source may have run already (the crash trials found it).
      const { result: _result, intentAt, approvalId: _later, ...intent } = entry;
      const under = approvedUnder.get(entry.callId);
      ops.push(put(swap(key), { ...intent, ...(under ? { approvalId: under } : {}), status: 'intent', checkpoint: intentAt }));
    }
  }
  for (const [actorId, last] of Object.entries(checkpoint.mailboxSeq)) {
    await copy(layout.mailboxAfter(from, actorId, checkpoint.cursors[actorId] ?? 0, last), swap, () => true);
  }
  const raw = await storage.get(layout.checkpoint(from, checkpoint.seq));
  const stored = raw && (decode(raw, Infinity) as Manifest | Checkpoint);
  if (stored && checkpointLayout(stored) === 2) {
    const manifest = stored as Manifest;
    // The newest record of each actor at the checkpoint becomes the fork's record at 1.
    const newest = new Map<string, { key: string; value: Uint8Array }>();
    for await (const [key, value] of storage.entries(layout.actors(from))) {
      const [actorId, seq] = layout.parseActor(from, key);
      if (seq <= manifest.seq) newest.set(actorId, { key, value });
    }
    for (const [actorId, { value }] of newest) ops.push({ type: 'put', key: layout.actor(to, actorId, 1), value });
    ops.push(...(await forkLogOps(storage, from, to, manifest.logSeq)));
    await copy(layout.seens(from), swap, () => true);
    ops.push(put(layout.checkpoint(to, 1), { ...manifest, seq: 1 }));
  } else {
    ops.push(put(layout.checkpoint(to, 1), { ...checkpoint, seq: 1 }));
  }
  const record: RunRecord = {
    id: to,
    crew: source.crew,
    version: checkpoint.machine.version,
    ...(source.source ? { source: source.source } : {}),
    status: 'running',
    input: source.input,
    startedAt: fork.now,
    updatedAt: fork.now,
    checkpoint: 1,
    resumes: 0,
    forkedFrom: { runId: from, checkpoint: checkpoint.seq },
  };
  ops.push(put(layout.run(to), record));
  return { ops, record };
}
