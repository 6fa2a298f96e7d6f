import { keys, put, type Checkpoint, type RunRecord, type RunStore } from './run-store.js';
import { prefixRange, type StorageOp } from './storage.js';
import { decode } from './codec.js';

/** One row of a run's history: a checkpoint and the state of every actor at it. */
export interface HistoryEntry {
  seq: number;
  ts: number;
  version: string;
  /** Root and agent states, e.g. `{ crew: 'working', researcher: 'acting' }`. */
  states: Record<string, string>;
}

type PersistedActor = { value?: unknown; children?: Record<string, { snapshot?: PersistedActor }> };

/** An XState state value as a dotted path: `running.backingOff` (parallel regions joined by `,`). */
export function stateString(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object') {
    return Object.entries(value as Record<string, unknown>)
      .map(([key, child]) => (child && (typeof child === 'string' || Object.keys(child as object).length) ? `${key}.${stateString(child)}` : key))
      .join(',');
  }
  return String(value);
}

const show = stateString;

/** Reads actor states out of a persisted root snapshot. */
export function statesOf(snapshot: unknown, rootId: string): Record<string, string> {
  const root = snapshot as PersistedActor;
  const states: Record<string, string> = {};
  if (root?.value !== undefined) states[rootId] = show(root.value);
  for (const [id, child] of Object.entries(root?.children ?? {})) {
    if (child?.snapshot?.value !== undefined) states[id] = show(child.snapshot.value);
  }
  return states;
}

/** Summarises every checkpoint of a run, oldest first. */
export async function runHistory(store: RunStore, runId: string, rootId: string): Promise<HistoryEntry[]> {
  await store.requireRun(runId);
  return (await store.checkpoints(runId)).map((c) => ({ seq: c.seq, ts: c.ts, version: c.machine.version, states: statesOf(c.snapshot, rootId) }));
}

/**
 * Writes a new run that starts at checkpoint `at` of `source`: the checkpoint becomes the new
 * run's first, with the journal up to it, the mail not yet delivered at it and the effect
 * ledger as it stood, so the fork reuses recorded results instead of calling again. Snapshots
 * hold only run-relative addresses, which is what makes them portable to another run id.
 */
export async function writeFork(store: RunStore, source: RunRecord, checkpoint: Checkpoint, fork: { runId: string; now: number }): Promise<RunRecord> {
  const ops: StorageOp[] = [];
  const copy = async (prefix: string, rename: (key: string) => string, keep: (value: unknown) => boolean) => {
    for await (const [key, value] of store.storage.entries(prefixRange(prefix))) {
      if (keep(decode(value, Infinity))) ops.push({ type: 'put', key: rename(key), value });
    }
  };
  const from = source.id;
  const swap = (kind: string) => (key: string) => `${kind}:${fork.runId}:${key.slice(kind.length + from.length + 2)}`;
  await copy(`jrnl:${from}:`, swap('jrnl'), (e) => (e as { seq: number }).seq <= checkpoint.journalSeq);
  await copy(`ledger:${from}:`, swap('ledger'), (e) => ((e as { checkpoint?: number }).checkpoint ?? Infinity) <= checkpoint.seq);
  for (const [actorId, last] of Object.entries(checkpoint.mailboxSeq)) {
    const cursor = checkpoint.cursors[actorId] ?? 0;
    await copy(`mbox:${from}:${actorId}:`, swap('mbox'), (e) => {
      const seq = (e as { seq: number }).seq;
      return seq > cursor && seq <= last;
    });
  }
  const record: RunRecord = {
    id: fork.runId,
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
  ops.push(put(keys.checkpoint(fork.runId, 1), { ...checkpoint, seq: 1 }));
  ops.push(put(keys.run(fork.runId), record));
  await store.storage.write(ops, { sync: true });
  return record;
}
