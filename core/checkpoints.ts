import type { AnyActor } from 'xstate';
import { hydrate, type BlobWriter } from './blobs.js';
import { decode } from './codec.js';
import { createLogWriter, readLogRange } from './log-store.js';
import { ErrorCode, TroupeError } from './errors.js';
import { layout } from './layout.js';
import { put, type UsageLedger, type UsageTotals } from './run-store.js';
import type { Redactor } from './secrets.js';
import { checkLogRange, createSnapshotSplitter, reassemble, type ActorRecord, type DeferredLog, type LogRef, type SnapshotSplitter } from './snapshot-parts.js';
import type { Storage, StorageOp } from './storage.js';
import { statesOf } from './state-string.js';

/**
 * Checkpoints that cost what a step changed. A checkpoint is a small manifest
 * (`ckpt:<run>:<seq>`); the state lives in per-actor records (`actor:<run>:<actor>:<seq>`,
 * written only by checkpoints where the actor changed, valid until its next record) and in
 * append-only logs (core/snapshot-parts.ts). Any checkpoint is rebuilt from its manifest,
 * the newest record of each actor at or before it, and the logs those records refer to.
 * Databases of layout 1 hold whole snapshots in `ckpt:` and are read as they are.
 */

/** The checkpoint layout this code writes. */
export const CHECKPOINT_SCHEMA_VERSION = 2;

/** What `ckpt:<run>:<seq>` holds in layout 2. */
export interface Manifest {
  seq: number;
  ts: number;
  schemaVersion: 2;
  machine: { id: string; version: string };
  /** The root actor's id in the run (`crew`, or `_part.<node>` on a remote part). */
  rootId: string;
  /** The newest journal entry at this point. */
  journalSeq: number;
  /** The highest log entry number used so far. */
  logSeq: number;
  /** Actors (and kernel records) this checkpoint wrote a record of. */
  changed: string[];
  /**
   * Names of every secret the run's calls resolved so far: a restore resolves them again
   * without reading the effect ledger. Absent in manifests written before it existed.
   */
  secrets?: string[];
  /**
   * The run's approvals are all in its index (`apprun:`, core/layout.ts): a restore reads
   * those. Absent in manifests written before the index existed, whose runs' approvals are
   * found by reading them all, once, and then indexed.
   */
  approvalIndex?: true;
}

/** A whole checkpoint, whatever layout wrote it: what restore, migrations and fork use. */
export interface Checkpoint {
  seq: number;
  ts: number;
  schemaVersion: number;
  machine: { id: string; version: string };
  /** The root's deep persisted snapshot (children included), message bodies in place. */
  snapshot: unknown;
  /** Per actor: sequence number of the last envelope delivered to it. */
  cursors: Record<string, number>;
  /** Per actor: sequence number of the last envelope enqueued for it. */
  mailboxSeq: Record<string, number>;
  journalSeq: number;
  usage?: UsageLedger;
  /** Ids of the latest envelopes accepted from outside the run, oldest first. */
  seen?: string[];
  /** Layout 2: the highest log entry number used, and the arrays rebuilt from logs. */
  logSeq?: number;
  arrays?: Array<[unknown[], LogRef]>;
  /** Layout 2: the checkpoint that wrote each record this one was rebuilt from. */
  recordVersions?: Record<string, number>;
  /** See {@link Manifest.secrets}; `undefined` when the checkpoint does not say. */
  secrets?: string[];
  /** See {@link Manifest.approvalIndex}. */
  approvalIndex?: boolean;
  /** Layout 2: per log, the entries read back that are stored singly (not yet packed). */
  logTails?: Array<[string, Array<{ n: number; value: unknown }>]>;
  /**
   * Layout 2, read with {@link CheckpointHint.deferConversations}: the conversations left
   * unread, empty in `snapshot` (and listed in `arrays`) until {@link fillDeferredLog}.
   */
  deferred?: DeferredLog[];
}

/** An actor record with the actor's mailbox position. */
interface StoredActor extends ActorRecord {
  mailbox?: { seq: number; cursor: number };
}

/** Kernel records live beside actor records; `$` never starts an actor id. */
const USAGE_TOTAL = '$usage';
const usageOf = (agentId: string) => `$usage.${agentId}`;

/** The ring of accepted envelope ids: this many are remembered, across restarts too. */
export const SEEN_RING = 4096;

/** What one {@link Checkpointer.capture} needs besides the root actor. */
export interface CaptureInput {
  seq: number;
  ts: number;
  journalSeq: number;
  positions: { cursors: Record<string, number>; mailboxSeq: Record<string, number> };
  /** Usage totals that changed since the last capture (`undefined` key: the run's total). */
  usage: { total: UsageTotals; agents: Record<string, UsageTotals>; changed: ReadonlySet<string> };
  /** Envelope ids accepted since the last capture, with their ring index. */
  seen: ReadonlyArray<{ index: number; id: string }>;
  /** The root's direct children XState reported a snapshot of since the last capture. */
  touched?: ReadonlySet<string>;
  /** Names of the secrets the run's calls resolved so far. */
  secrets?: ReadonlySet<string>;
}

/** The checkpoint writer of one run. */
export interface Checkpointer {
  /**
   * Builds the ops of checkpoint `input.seq`: the records of what changed, new log entries,
   * blobs, the manifest. `empty` when nothing but the manifest would be written.
   */
  capture(root: AnyActor, input: CaptureInput): { ops: StorageOp[]; blobOps: StorageOp[]; manifest: Manifest; empty: boolean };
  /** Continues after a restore: the arrays that came back from logs are not written again. */
  seed(checkpoint: Checkpoint): void;
  /** A deferred log was read back: its writer continues from the entries stored singly. */
  filled(log: string, singles: ReadonlyArray<{ n: number; value: unknown }>): void;
  /**
   * `root`, restored from `checkpoint` and not yet started, is what its records say: the next
   * capture writes what changed since, not every record again. Not for a checkpoint that was
   * migrated (or is of layout 1): its records are not what the restored actors hold.
   */
  restored(root: AnyActor, checkpoint: Checkpoint): void;
}

/** Creates the checkpoint writer of one run. */
export function createCheckpointer(options: { runId: string; rootId: string; machine: { id: string; version: string }; blobs: BlobWriter; redact: Redactor }): Checkpointer {
  const { runId, rootId, machine, blobs, redact } = options;
  let splitter: SnapshotSplitter = createSnapshotSplitter();
  const logs = createLogWriter({ runId, redact });
  const positions = new Map<string, string>();
  return {
    capture(root, input) {
      // An actor whose mailbox moved is written even when its own state did not change.
      const force = new Set<string>();
      const now = new Map<string, { seq: number; cursor: number }>();
      for (const [actorId, seq] of Object.entries(input.positions.mailboxSeq)) {
        const position = { seq, cursor: input.positions.cursors[actorId] ?? 0 };
        now.set(actorId, position);
        if (positions.get(actorId) !== `${position.seq}/${position.cursor}`) force.add(actorId);
      }
      const capture = splitter.capture(root, rootId, force, input.touched);
      const ops: StorageOp[] = [];
      const blobOps: StorageOp[] = [];
      const changed: string[] = [];
      for (const [actorId, record] of capture.records) {
        const position = now.get(actorId);
        const stored: StoredActor = position ? { ...record, mailbox: position } : record;
        // Long strings of a record (tool arguments, outputs) go to blobs: a record is
        // rewritten whenever its actor changes, a blob once.
        const { value, ops: more } = blobs.dehydrate(redact(stored));
        blobOps.push(...more);
        ops.push(put(layout.actor(runId, actorId, input.seq), value));
        if (position) positions.set(actorId, `${position.seq}/${position.cursor}`);
        changed.push(actorId);
      }
      ops.push(...logs.write(capture.entries));
      for (const agentId of input.usage.changed) {
        ops.push(put(layout.actor(runId, usageOf(agentId), input.seq), input.usage.agents[agentId]));
        changed.push(usageOf(agentId));
      }
      if (input.usage.changed.size > 0) {
        ops.push(put(layout.actor(runId, USAGE_TOTAL, input.seq), input.usage.total));
        changed.push(USAGE_TOTAL);
      }
      for (const { index, id } of input.seen) ops.push(put(layout.seen(runId, index % SEEN_RING), { index, id }));
      const manifest: Manifest = { seq: input.seq, ts: input.ts, schemaVersion: 2, machine, rootId, journalSeq: input.journalSeq, logSeq: capture.logSeq, changed, secrets: [...(input.secrets ?? [])], approvalIndex: true };
      ops.push(put(layout.checkpoint(runId, input.seq), manifest));
      return { ops, blobOps, manifest, empty: changed.length === 0 && capture.entries.length === 0 && input.seen.length === 0 };
    },
    seed(checkpoint) {
      splitter = createSnapshotSplitter({ logSeq: checkpoint.logSeq ?? 0 });
      splitter.seed(checkpoint.arrays ?? []);
      logs.seed(new Map(checkpoint.logTails ?? []));
      positions.clear();
    },
    filled(log, singles) {
      logs.seedLog(log, singles);
    },
    restored(root, checkpoint) {
      if (!checkpoint.arrays || !checkpoint.recordVersions) return;
      splitter.assumeWritten(root, rootId);
      // The records hold these positions already: an actor whose mailbox stays put is not forced.
      for (const [actorId, seq] of Object.entries(checkpoint.mailboxSeq)) positions.set(actorId, `${seq}/${checkpoint.cursors[actorId] ?? 0}`);
    },
  };
}

const corrupt = (runId: string, seq: number, cause: unknown) =>
  new TroupeError(ErrorCode.STORAGE_CORRUPT, `checkpoint ${seq} of run ${runId} cannot be rebuilt: ${(cause as Error)?.message ?? String(cause)}`, {
    cause,
    details: { runId, seq },
  });

/**
 * Which layout wrote a stored checkpoint: 2 (a manifest of records and logs) or 1 (a whole
 * snapshot). A schema newer than this code reads is refused, never read as an older one.
 */
export function checkpointLayout(raw: { schemaVersion?: unknown; machine?: { id: string; version: string } }): 1 | 2 {
  const version = raw.schemaVersion;
  if (version === CHECKPOINT_SCHEMA_VERSION) return 2;
  if (typeof version === 'number' && version > CHECKPOINT_SCHEMA_VERSION) {
    throw new TroupeError(ErrorCode.SNAPSHOT_VERSION, `checkpoint was written by a newer Troupe (schema ${version}); this code reads schema ${CHECKPOINT_SCHEMA_VERSION}`, {
      details: { schemaVersion: version, ...(raw.machine ? { machine: raw.machine } : {}) },
    });
  }
  return 1;
}

/** The newest entry in `range`, its value decoded. */
async function newestEntry<T>(storage: Storage, range: Parameters<Storage['entries']>[0]): Promise<[string, T] | undefined> {
  for await (const [key, value] of storage.entries({ ...range, reverse: true, limit: 1 })) return [key, decode(value, Infinity) as T];
  return undefined;
}

/** The newest value in `range`, decoded. */
async function newest<T>(storage: Storage, range: Parameters<Storage['entries']>[0]): Promise<T | undefined> {
  return (await newestEntry<T>(storage, range))?.[1];
}

/** What a reader of the latest checkpoint may know of a run: its records are then read with the manifest. */
export interface CheckpointHint {
  /** The root actor's id (`crew`, or `_part.<node>`); a wrong guess costs one read. */
  rootId: string;
  /** The ids of the root's children (the crew's agents). */
  actorIds: readonly string[];
  /**
   * Leave the children's conversations ({@link CONVERSATION_KEY} of their context) unread:
   * they come back empty and listed in {@link Checkpoint.deferred}. Only a run host that
   * fills one before its actor gets work may ask for this.
   */
  deferConversations?: boolean;
}

/**
 * The context key of an actor's conversation (actors/agent.ts). A restore for a run host may
 * leave it unread (see {@link CheckpointHint.deferConversations}): the host reads it back
 * before it hands the actor an envelope, a model call or a tool call, which is everything an
 * agent reads its conversation in.
 */
export const CONVERSATION_KEY = 'conversation';

/**
 * Reads a deferred conversation back into its (empty) array, in place; returns the entries
 * stored singly, for {@link Checkpointer.filled}. A range of the wrong length, or a damaged
 * value, fails with `STORAGE_CORRUPT` and leaves the array empty.
 */
export async function fillDeferredLog(storage: Storage, runId: string, seq: number, deferred: DeferredLog): Promise<Array<{ n: number; value: unknown }>> {
  const { ref, array } = deferred;
  try {
    const { values, singles } = await readLogRange(storage, runId, ref);
    checkLogRange(ref, values);
    if (array.length === 0) for (const value of values) array.push(value);
    return singles;
  } catch (error) {
    throw error instanceof TroupeError ? error : corrupt(runId, seq, error);
  }
}

/** The ring of ids of envelopes accepted from outside the run. */
async function readRing(storage: Storage, runId: string): Promise<Array<{ index: number; id: string }>> {
  const ring: Array<{ index: number; id: string }> = [];
  for await (const [, value] of storage.entries(layout.seens(runId))) ring.push(decode(value, Infinity) as { index: number; id: string });
  return ring;
}

/**
 * `checkpoint` with every deferred conversation read back (what a migration, which rewrites
 * the snapshot, needs): the same arrays, filled, and their singles among `logTails`.
 */
export async function fillDeferredLogs(storage: Storage, runId: string, checkpoint: Checkpoint): Promise<Checkpoint> {
  if (!checkpoint.deferred) return checkpoint;
  const tails = new Map(checkpoint.logTails ?? []);
  for (const deferred of checkpoint.deferred) tails.set(deferred.ref.log, await fillDeferredLog(storage, runId, checkpoint.seq, deferred));
  const { deferred: _deferred, ...rest } = checkpoint;
  return { ...rest, logTails: [...tails] };
}

/**
 * Reads checkpoint `seq` of a run (the newest with `'latest'`) and rebuilds it whole, or
 * `undefined` when there is none. A checkpoint whose records or logs are missing fails with
 * `STORAGE_CORRUPT`.
 */
export async function readCheckpoint(storage: Storage, runId: string, seq: number | 'latest', hint?: CheckpointHint, onRead?: (head: CheckpointHead | undefined) => void): Promise<Checkpoint | undefined> {
  // The newest record of an actor is never newer than the newest manifest (both are written
  // by one batch), so with a hint the latest checkpoint's records are read with its manifest.
  const early = seq === 'latest' && hint ? new Map<string, Promise<[string, unknown] | undefined>>() : undefined;
  const newestOf = (actorId: string) => newestEntry<unknown>(storage, layout.actorRecords(runId, actorId));
  if (early && hint) {
    for (const actorId of [hint.rootId, ...hint.actorIds]) {
      for (const id of [actorId, usageOf(actorId)]) {
        const read = newestOf(id);
        read.catch(() => {});
        early.set(id, read);
      }
    }
    const total = newestOf(USAGE_TOTAL);
    total.catch(() => {});
    early.set(USAGE_TOTAL, total);
  }
  const earlyRing = early ? readRing(storage, runId) : undefined;
  earlyRing?.catch(() => {});
  const raw =
    seq === 'latest'
      ? await newest<Manifest | Checkpoint>(storage, layout.checkpoints(runId))
      : await (async () => {
          const bytes = await storage.get(layout.checkpoint(runId, seq));
          return bytes && (decode(bytes, Infinity) as Manifest | Checkpoint);
        })();
  onRead?.(raw && headOf(raw));
  if (!raw) return undefined;
  if (checkpointLayout(raw) === 1) {
    // Layout 1: the whole snapshot is in the checkpoint, long strings in blobs.
    const v1 = raw as Checkpoint;
    return { ...v1, snapshot: await hydrate(storage, v1.snapshot) };
  }
  const manifest = raw as Manifest;
  try {
    const records = new Map<string, Promise<StoredActor | undefined>>();
    const tails = new Map<string, Array<{ n: number; value: unknown }>>();
    const recordVersions: Record<string, number> = {};
    const versionOf = async <T>(actorId: string): Promise<T | undefined> => {
      const found = ((await early?.get(actorId)) ?? (early?.has(actorId) ? undefined : await newestEntry<T>(storage, layout.actorUpTo(runId, actorId, manifest.seq)))) as [string, T] | undefined;
      if (found) recordVersions[actorId] = layout.parseActor(runId, found[0])[1];
      return found?.[1];
    };
    // One read per record however many ask for it at once.
    const recordOf = (actorId: string) => {
      let record = records.get(actorId);
      if (!record) {
        record = versionOf<StoredActor>(actorId).then(async (found) => (found === undefined ? undefined : ((await hydrate(storage, found)) as StoredActor)));
        records.set(actorId, record);
      }
      return record;
    };
    // Every read a rebuild needs, issued together once the root names the children: a
    // resume waits for one round of storage reads, not one per record.
    const root = await recordOf(manifest.rootId);
    const childIds = Object.keys(((root?.snapshot ?? {}) as { children?: object }).children ?? {});
    const actorIds = [manifest.rootId, ...childIds];
    for (const childId of childIds) void recordOf(childId).catch(() => {});
    const [{ snapshot, arrays, deferred }, used, total, ring] = await Promise.all([
      reassemble(
        {
          actor: recordOf,
          log: async (ref) => {
            const { values, singles } = await readLogRange(storage, runId, ref);
            // The newest range of a log ends with its singles: the tail its writer continues.
            const known = tails.get(ref.log);
            if (!known || (singles.at(-1)?.n ?? -1) > (known.at(-1)?.n ?? -1)) tails.set(ref.log, singles);
            return values;
          },
        },
        manifest.rootId,
        hint?.deferConversations ? { defer: (_actorId, key) => key === CONVERSATION_KEY } : {},
      ),
      Promise.all(actorIds.map((actorId) => versionOf<UsageTotals>(usageOf(actorId)))),
      versionOf<UsageTotals>(USAGE_TOTAL),
      earlyRing ?? readRing(storage, runId),
    ]);
    const cursors: Record<string, number> = {};
    const mailboxSeq: Record<string, number> = {};
    const agents: Record<string, UsageTotals> = {};
    for (const [i, actorId] of actorIds.entries()) {
      const position = (await recordOf(actorId))?.mailbox;
      if (position) {
        mailboxSeq[actorId] = position.seq;
        cursors[actorId] = position.cursor;
      }
      if (used[i]) agents[actorId] = used[i];
    }
    return {
      seq: manifest.seq,
      ts: manifest.ts,
      schemaVersion: 2,
      machine: manifest.machine,
      snapshot,
      cursors,
      mailboxSeq,
      journalSeq: manifest.journalSeq,
      usage: { total: total ?? { steps: 0, tokens: 0, cost: 0 }, agents },
      seen: ring.sort((a, b) => a.index - b.index).map((r) => r.id),
      logSeq: manifest.logSeq,
      arrays,
      recordVersions,
      ...(manifest.secrets ? { secrets: manifest.secrets } : {}),
      ...(manifest.approvalIndex ? { approvalIndex: true } : {}),
      logTails: [...tails],
      ...(deferred.length > 0 ? { deferred } : {}),
    };
  } catch (error) {
    if (error instanceof TroupeError) throw error;
    throw corrupt(runId, manifest.seq, error);
  }
}

/** Who wrote a checkpoint, and which one it is: what a node checks before it claims a run. */
export interface CheckpointHead {
  seq: number;
  schemaVersion: number;
  machine: { id: string; version: string };
}

function headOf(raw: Manifest | Checkpoint): CheckpointHead {
  return { seq: raw.seq, schemaVersion: raw.schemaVersion, machine: raw.machine };
}

/** Who wrote the newest checkpoint of a run (schema and machine), without rebuilding it. */
export async function latestCheckpointHead(storage: Storage, runId: string): Promise<CheckpointHead | undefined> {
  const raw = await newest<Manifest | Checkpoint>(storage, layout.checkpoints(runId));
  return raw && headOf(raw);
}

/**
 * The newest checkpoint of a run, and its head as soon as the manifest is read: one read of
 * the manifest serves a node's checks before its claim and the rebuild after it. `head`
 * rejects when the read fails before the manifest was read.
 */
export function readLatestCheckpoint(storage: Storage, runId: string, hint?: CheckpointHint): { head: Promise<CheckpointHead | undefined>; checkpoint: Promise<Checkpoint | undefined> } {
  let resolveHead!: (head: CheckpointHead | undefined) => void;
  let rejectHead!: (error: unknown) => void;
  const head = new Promise<CheckpointHead | undefined>((resolve, reject) => ((resolveHead = resolve), (rejectHead = reject)));
  const checkpoint = readCheckpoint(storage, runId, 'latest', hint, resolveHead);
  // A settled promise ignores the later call: after the manifest, this changes nothing.
  checkpoint.catch(rejectHead);
  return { head, checkpoint };
}

/**
 * Sequence number, time and newest journal entry of each checkpoint of a run, oldest first:
 * where a reader of the journal finds the checkpoint that holds a given step. Reads the
 * manifests alone (whole snapshots in layout 1), no actor records.
 */
export async function checkpointMarks(storage: Storage, runId: string): Promise<Array<{ seq: number; ts: number; journalSeq: number }>> {
  const marks: Array<{ seq: number; ts: number; journalSeq: number }> = [];
  for await (const [, value] of storage.entries(layout.checkpoints(runId))) {
    const m = decode(value, Infinity) as Manifest | Checkpoint;
    marks.push({ seq: m.seq, ts: m.ts, journalSeq: m.journalSeq });
  }
  return marks;
}

export async function checkpointStates(storage: Storage, runId: string, legacyRootId: string): Promise<Array<{ seq: number; ts: number; version: string; states: Record<string, string> }>> {
  const manifests: Array<Manifest | Checkpoint> = [];
  for await (const [, value] of storage.entries(layout.checkpoints(runId))) manifests.push(decode(value, Infinity) as Manifest | Checkpoint);
  // Every record's state (and a root's children), by actor, in write order: a checkpoint
  // sees the newest record at or before it, of the actors its root had then.
  const byActor = new Map<string, Array<{ seq: number; state: string | undefined; children?: string[] }>>();
  for await (const [key, value] of storage.entries(layout.actors(runId))) {
    const [actorId, seq] = layout.parseActor(runId, key);
    if (actorId.startsWith('$')) continue;
    const record = decode(value, Infinity) as StoredActor;
    const children = (record.snapshot as { children?: Record<string, unknown> } | undefined)?.children;
    const list = byActor.get(actorId) ?? [];
    list.push({ seq, state: record.state, ...(children ? { children: Object.keys(children) } : {}) });
    byActor.set(actorId, list);
  }
  const at = (actorId: string, seq: number) => {
    let found: { state: string | undefined; children?: string[] } | undefined;
    for (const r of byActor.get(actorId) ?? []) if (r.seq <= seq) found = r;
    return found;
  };
  return manifests.map((m) => {
    if (checkpointLayout(m) === 1) return { seq: m.seq, ts: m.ts, version: m.machine.version, states: statesOf((m as Checkpoint).snapshot, legacyRootId) };
    const manifest = m as Manifest;
    const states: Record<string, string> = {};
    const root = at(manifest.rootId, manifest.seq);
    for (const actorId of [manifest.rootId, ...(root?.children ?? [])]) {
      const state = actorId === manifest.rootId ? root?.state : at(actorId, manifest.seq)?.state;
      if (state !== undefined) states[actorId] = state;
    }
    return { seq: m.seq, ts: m.ts, version: m.machine.version, states };
  });
}
