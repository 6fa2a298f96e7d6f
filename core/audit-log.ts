import { createHash, createHmac } from 'node:crypto';
import type { AuditHeadStore, AuditKey } from './audit-seal.js';
import { checkState, isCommittedState, type CommittedState, type StateCheck, type StateCommitment } from './audit-state.js';
import { systemClock, type Clock } from './clock.js';
import { decode, encode } from './codec.js';
import { ErrorCode, serializeError, TroupeError } from './errors.js';
import { layout } from './layout.js';
import type { Storage, StorageOp } from './storage.js';

/**
 * The audit log: one append-only, hash-chained sequence of records per database (node),
 * stored under `audit:<seq, 12 digits>`. Each record carries the hash of the one before,
 * so editing, removing or reordering a stored record breaks the chain and {@link AuditLog.verify}
 * names the first bad one. Records are built synchronously ({@link AuditLog.append}) so a
 * caller can write them in the same batch as the checkpoint they describe.
 *
 * A plain hash chain only shows edits made by someone who did not re-hash: whoever can
 * write the database can rewrite it whole, or drop its newest records. Given a seal
 * (core/audit-seal.ts: a key and a head file kept outside the database) the log keys every
 * record with HMAC-SHA256, so re-chaining needs the key, and saves each committed head
 * outside, so a truncated log shows against the newest saved head.
 */

/** What a record is about; the listed kinds are the runtime's, others are free-form. */
export type AuditKind =
  | 'model.call' | 'tool.call' | 'permission' | 'approval.requested' | 'approval.decided' | 'message'
  | 'run.started' | 'run.resumed' | 'run.completed' | 'run.failed'
  | (string & {});

/** What a caller appends. `data` must be JSON-like; it is normalized (see {@link toJsonValue}). */
export interface AuditEntry {
  kind: AuditKind;
  runId: string;
  actor: string;
  data?: Record<string, unknown>;
  /** Defaults to the log's clock. */
  ts?: number;
}

/** One stored record. `hash` is the sha256 of the canonical JSON of every other field. */
export interface AuditRecord {
  seq: number;
  ts: number;
  kind: AuditKind;
  runId: string;
  actor: string;
  data: Record<string, unknown>;
  /** `hash` of the previous record; {@link GENESIS} for the first. */
  prev: string;
  /** Id of the key the record is keyed with ({@link AuditKey.id}); absent: `hash` is a plain sha256. */
  keyId?: string;
  /** On the last record of a batch: hashes of values the batch wrote (core/audit-state.ts). */
  state?: CommittedState;
  hash: string;
}

/** The newest record's position: what to anchor outside the database to detect truncation. */
export interface AuditHead {
  seq: number;
  hash: string;
}

/**
 * Why verification failed: a record's content changed, a record is missing, one sits at
 * another's place, a link does not match, a key under `audit:` is not `audit:<12 digits>`,
 * or the records or saved heads cannot be checked (keyed with a key this log does not have,
 * or the saved heads are missing or were not written with the key), or a value a record
 * committed to (a checkpoint manifest, a done ledger entry, a finished run's record) was
 * changed since (`firstBad` is that record, `key` the value's key).
 */
export type AuditFailure = 'altered' | 'removed' | 'reordered' | 'broken-chain' | 'stray-key' | 'unverifiable' | 'state-altered';

/** The outcome of {@link AuditLog.verify}. */
export type AuditVerification =
  | {
      ok: true;
      count: number;
      head: AuditHead;
      /** Records keyed with the seal's key; the others (older, unkeyed) could have been rewritten whole. */
      keyed: number;
      /**
       * The newest head saved outside the database, when the log has a seal. Records after it
       * (`head.seq - saved.seq` of them, committed while its write was on the way or before a
       * crash) could be removed without this verification noticing.
       */
      saved?: AuditHead;
      /** Committed values compared (see core/audit-state.ts): equal, no longer stored, or rewritten by a later unaudited batch. */
      state: Omit<StateCheck, 'altered'>;
    }
  | { ok: false; firstBad: number; reason: AuditFailure; message: string; key?: string };

/** `prev` of the first record. */
export const GENESIS = '0'.repeat(64);

/** Key of the record with sequence number `seq`. */
export const auditKey = layout.audit;

/** JSON with object keys sorted and no whitespace: equal values always give equal text. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    return typeof value === 'number' && !Number.isFinite(value) ? 'null' : (JSON.stringify(value) ?? 'null');
  }
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const fields = Object.keys(value)
    .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
  return `{${fields.join(',')}}`;
}

/** The hash an unkeyed record must carry: sha256 (hex) of the canonical JSON of all fields but `hash`. */
export function hashRecord(record: Omit<AuditRecord, 'hash'> & { hash?: string }): string {
  const { hash: _ignored, ...rest } = record;
  return createHash('sha256').update(canonicalJson(rest)).digest('hex');
}

/** The hash a keyed record must carry: HMAC-SHA256 (hex) under `key` of the same canonical JSON. */
export function macRecord(record: Omit<AuditRecord, 'hash'> & { hash?: string }, key: AuditKey): string {
  const { hash: _ignored, ...rest } = record;
  return createHmac('sha256', key.secret).update(canonicalJson(rest)).digest('hex');
}

/**
 * A JSON value equal to `value` after a msgpack round trip, so a record hashes the same
 * when written and when read back: bytes become `{ $base64 }`, dates ISO strings, bigints
 * strings, errors their serialized form, maps objects, sets arrays; functions are dropped.
 */
export function toJsonValue(value: unknown, seen: Set<object> = new Set()): unknown {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? value + 0 : null; // +0 turns -0 into 0
  if (typeof value === 'bigint') return value.toString();
  if (typeof value !== 'object') return undefined;
  if (value instanceof Uint8Array) return { $base64: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') };
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
  if (value instanceof Error) return toJsonValue(serializeError(value), seen);
  if (seen.has(value)) throw new TypeError('audit data must not contain cycles');
  seen.add(value);
  try {
    if (Array.isArray(value) || value instanceof Set) return [...value].map((v) => toJsonValue(v, seen) ?? null);
    const pairs = value instanceof Map ? [...value].map(([k, v]) => [String(k), v] as const) : Object.entries(value);
    const out: Record<string, unknown> = {};
    for (const [k, v] of pairs) {
      const json = toJsonValue(v, seen);
      if (json !== undefined) out[k] = json;
    }
    return out;
  } finally {
    seen.delete(value);
  }
}

/** Records as JSON Lines in canonical form, so an export can be re-hashed line by line. */
export function toJsonl(records: readonly AuditRecord[]): string {
  return records.map((r) => `${canonicalJson(r)}\n`).join('');
}

const HEX64 = /^[0-9a-f]{64}$/;

function isRecord(value: unknown): value is AuditRecord {
  const r = value as AuditRecord;
  return typeof r === 'object' && r !== null && Number.isSafeInteger(r.seq) && typeof r.ts === 'number'
    && typeof r.kind === 'string' && typeof r.runId === 'string' && typeof r.actor === 'string'
    && typeof r.data === 'object' && r.data !== null && !Array.isArray(r.data)
    && typeof r.prev === 'string' && HEX64.test(r.prev) && typeof r.hash === 'string'
    && (r.keyId === undefined || typeof r.keyId === 'string')
    && (r.state === undefined || isCommittedState(r.state));
}

/**
 * Checks records one by one in key order. `anchors` are heads known to have been written
 * (a truncated or rewritten log shows against them); `key` checks keyed records, which
 * without it are `unverifiable`. See {@link AuditLog.verify}.
 */
export function createChainChecker(anchors: readonly AuditHead[] = [], key?: AuditKey, keys = layout.auditChain()) {
  let last: AuditHead = { seq: 0, hash: GENESIS };
  let count = 0;
  let keyed = 0;
  const wanted = new Set(anchors.map((a) => a.seq));
  const seen = new Map<number, string>();
  const committed = new Map<string, { seq: number; commitment: StateCommitment }>();
  const fail = (firstBad: number, reason: AuditFailure, message: string, extra: { key?: string } = {}): AuditVerification => ({ ok: false, firstBad, reason, message, ...extra });
  return {
    /** Feeds the next stored entry: its key (`audit:<12 digits>`, or the chain's) and its decoded value. */
    next(storedKey: string, record: unknown): AuditVerification | undefined {
      const expected = last.seq + 1;
      const keySeq = keys.seqOf(storedKey);
      if (keySeq === undefined || keySeq < 1) {
        return fail(expected, 'stray-key', `"${storedKey}" is not an audit record key (${keys.shape}); something other than the log wrote it`, { key: storedKey });
      }
      if (!isRecord(record)) return fail(keySeq, 'altered', `record ${keySeq} is not a readable audit record`);
      if (record.keyId !== undefined && record.keyId !== key?.id) {
        return fail(keySeq, 'unverifiable', key
          ? `record ${keySeq} is keyed with key ${record.keyId}, not with this log's key ${key.id}`
          : `record ${keySeq} is keyed (key ${record.keyId}) and this log has no key to check it`);
      }
      // Once records are keyed an unkeyed one can only be a forgery by someone without the key.
      if (record.keyId === undefined && keyed > 0) return fail(keySeq, 'altered', `record ${keySeq} is not keyed but records before it are`);
      const selfConsistent = (record.keyId === undefined ? hashRecord(record) : macRecord(record, key!)) === record.hash;
      if (record.seq !== keySeq) {
        return selfConsistent
          ? fail(keySeq, 'reordered', `record ${record.seq} is stored at position ${keySeq}`)
          : fail(keySeq, 'altered', `record at position ${keySeq} claims seq ${record.seq} and its hash does not match`);
      }
      if (keySeq > expected) return fail(expected, 'removed', `record${keySeq - expected > 1 ? `s ${expected}-${keySeq - 1} are` : ` ${expected} is`} missing`);
      if (!selfConsistent) return fail(keySeq, 'altered', `record ${keySeq} does not match its ${record.keyId === undefined ? 'hash' : 'keyed hash'}`);
      if (record.prev !== last.hash) return fail(keySeq, 'broken-chain', `record ${keySeq} does not link to record ${last.seq}`);
      last = { seq: record.seq, hash: record.hash };
      if (wanted.has(record.seq)) seen.set(record.seq, record.hash);
      if (record.keyId !== undefined) keyed++;
      for (const [key, commitment] of Object.entries(record.state ?? {})) committed.set(key, { seq: record.seq, commitment });
      if (record.kind === BATCH_FAILED && Array.isArray(record.data.records)) {
        const voided = new Set(record.data.records);
        for (const [key, { seq }] of committed) if (voided.has(seq)) committed.delete(key);
      }
      count++;
      return undefined;
    },
    /**
     * Ends the check once every record was fed. `saved` (the seal's newest head, which must
     * also be among the anchors) is only reported, so a caller sees the window it leaves.
     * `state` compares committed values with what `storage` holds now (skipped without it).
     */
    async finish(saved?: AuditHead, storage?: Storage): Promise<AuditVerification> {
      for (const anchor of anchors) {
        if (anchor.seq === 0) continue;
        if (anchor.seq > last.seq) return fail(last.seq + 1, 'removed', `the log ends at ${last.seq} but record ${anchor.seq} was written`);
        if (seen.get(anchor.seq) !== anchor.hash) return fail(anchor.seq, 'altered', `record ${anchor.seq} is not the one that was written (the chain was rewritten)`);
      }
      const { altered, ...state } = storage ? await checkState(storage, committed) : { checked: 0, absent: 0, superseded: 0 };
      if (altered) return fail(altered.seq, 'state-altered', `"${altered.key}" is not the value audit record ${altered.seq} committed to: it was edited afterwards`, { key: altered.key });
      return { ok: true, count, head: last, keyed, ...(saved ? { saved } : {}), state };
    },
  };
}

/** Options of {@link createAuditLog}. */
export interface AuditLogOptions {
  /** Stamps records without `ts`. Default the system clock. */
  clock?: Pick<Clock, 'now'>;
  /** Applied to each entry's `data` before it is hashed, e.g. a secrets redactor. */
  redact?: (data: Record<string, unknown>) => Record<string, unknown>;
  /**
   * The key and saved heads kept outside the database ({@link openAuditSeal}): records are
   * keyed with the key, committed heads saved, and {@link AuditLog.verify} checks both.
   * Without one records carry a plain sha256 and only an `anchor` shows truncation.
   */
  seal?: { readonly key: AuditKey; readonly heads: AuditHeadStore };
  /**
   * The chain this log writes and reads (`audit.<chain>:<seq>`, core/layout.ts): one per node
   * in a database many nodes share, since each chains what it writes. Default the
   * database's one chain (`audit:<seq>`).
   */
  chain?: string;
}

/** Filter of {@link AuditLog.read}. */
export interface AuditQuery {
  runId?: string;
  kind?: AuditKind;
  /** Only records with a greater `seq` (incremental export). */
  after?: number;
}

/** An audit log on a {@link Storage}; see {@link createAuditLog}. */
export interface AuditLog {
  /** The chain of this log (see {@link AuditLogOptions.chain}); `undefined` for the database's one chain. */
  readonly chain: string | undefined;
  /** The newest record appended (written or not); `{ seq: 0, hash: GENESIS }` when empty. */
  readonly head: AuditHead;
  /**
   * Reads the newest stored record to continue the chain, or takes `known`, that record as its
   * caller just read it ({@link storedAuditHead}). Required before the first append.
   */
  open(known?: AuditHead & { keyId?: string }): Promise<void>;
  /**
   * Builds the records and their put ops and advances the head at once, so consecutive
   * appends chain even before anything is written. The caller writes the ops (in the same
   * batch as its checkpoint), then calls {@link commit} on success or {@link rollback} on failure.
   * `state` (values the batch writes, core/audit-state.ts) goes on the last record, so
   * {@link verify} also shows those values edited later.
   */
  append(entries: readonly AuditEntry[], options?: { state?: CommittedState }): StorageOp[];
  /**
   * Marks the ops of an append as durable (lets {@link verify} detect their later removal)
   * and, with a seal, saves the new durable head outside the database in the background.
   */
  commit(ops: readonly StorageOp[]): void;
  /** Resolves once every committed head is saved (see {@link AuditHeadStore.save}); call it before closing. */
  flush(): Promise<void>;
  /**
   * Undoes an append whose batch failed. When nothing was appended after it the head moves
   * back; otherwise later records already link to it, so its records are written on their
   * own (they did happen) to keep the chain whole. If that write fails too the log refuses
   * appends until {@link open} is called again.
   */
  rollback(ops: readonly StorageOp[]): Promise<void>;
  /** Appends and writes in one batch, together with `with` (e.g. a checkpoint's ops). */
  write(entries: readonly AuditEntry[], options?: { with?: readonly StorageOp[]; sync?: boolean }): Promise<AuditRecord[]>;
  /** Stored records in order, optionally filtered. Throws when a record does not decode. */
  read(query?: AuditQuery): Promise<AuditRecord[]>;
  /**
   * Re-hashes every stored record and checks the links, that every key is a record key and
   * the sequence has no gap. With a seal keyed records are checked against the key and the
   * log against the newest saved head (removing records up to it shows; the result's
   * `saved` says where that cover ends). `anchor` is a head saved elsewhere (another
   * machine, a signed receipt). Without seal or anchor, removing the newest records is only
   * detectable back to what this log object has seen committed.
   */
  verify(options?: { anchor?: AuditHead }): Promise<AuditVerification>;
}

const MAX_LABEL = 256;

/**
 * Kind of the record written with the records of a failed batch that later records already
 * linked to: `data.records` lists those whose `state` commitments never landed.
 */
export const BATCH_FAILED = 'audit.batch-failed';

function assertEntry(entry: AuditEntry): void {
  const label = (name: string, value: unknown, min: number) => {
    if (typeof value !== 'string' || value.length < min || value.length > MAX_LABEL) {
      throw new TypeError(`audit entry ${name} must be a string of ${min} to ${MAX_LABEL} characters, got ${JSON.stringify(value)}`);
    }
  };
  label('kind', entry?.kind, 1);
  label('runId', entry.runId, 0);
  label('actor', entry.actor, 0);
  if (entry.data !== undefined && (typeof entry.data !== 'object' || entry.data === null || Array.isArray(entry.data))) {
    throw new TypeError('audit entry data must be a plain object');
  }
  if (entry.ts !== undefined && !Number.isFinite(entry.ts)) throw new TypeError('audit entry ts must be a finite number');
}

const seqOfKey = (key: string) => Number(key.slice(key.lastIndexOf(':') + 1));

const decodeOrUndefined = (value: Uint8Array): unknown => {
  try {
    return decode(value, Infinity);
  } catch {
    return undefined;
  }
};

/**
 * The newest record stored under a proper key (`audit:<12 digits>`), skipping stray keys so
 * a planted `audit:1e1` can neither rewind the sequence nor get a genuine record overwritten.
 */
export async function storedAuditHead(storage: Storage, chain?: string): Promise<AuditHead & { keyId?: string }> {
  const keys = layout.auditChain(chain);
  // The newest record is nearly always the last key: a few are read, not a whole chunk of the
  // chain (a node reads this at every start); keys that are not records make it read on.
  for (const limit of [HEAD_PROBE, undefined]) {
    let seen = 0;
    for await (const [key, value] of storage.entries({ ...keys.range(), reverse: true, ...(limit ? { limit } : {}) })) {
      seen++;
      const seq = keys.seqOf(key);
      if (seq === undefined || seq < 1) continue;
      const record = decodeOrUndefined(value);
      // A damaged tail still gets successors (verify reports it); the chain goes on from its bytes.
      if (!isRecord(record)) return { seq, hash: createHash('sha256').update(value).digest('hex') };
      return { seq, hash: record.hash, ...(record.keyId !== undefined ? { keyId: record.keyId } : {}) };
    }
    if (limit === undefined || seen < limit) break;
  }
  return { seq: 0, hash: GENESIS };
}

/** Keys {@link storedAuditHead} reads before it reads on through the whole chain. */
const HEAD_PROBE = 8;

/**
 * The chains of a database many nodes share (`audit.<chain>:…`, core/layout.ts), in order:
 * one seek per chain, not a read of every record.
 */
export async function auditChains(storage: Storage): Promise<string[]> {
  const chains: string[] = [];
  let range = layout.auditChains();
  for (;;) {
    let next: string | undefined;
    for await (const [key] of storage.entries({ ...range, limit: 1 })) next = key;
    const chain = next === undefined ? undefined : layout.auditChainOf(next);
    if (chain === undefined) return chains;
    chains.push(chain);
    range = layout.auditChainsAfter(chain);
  }
}

/**
 * Creates the audit log of `storage`. Call `open()` once before appending; one log object
 * per database, since two would hand out the same sequence numbers.
 */
export function createAuditLog(storage: Storage, options: AuditLogOptions = {}): AuditLog {
  const clock = options.clock ?? systemClock;
  const redact = options.redact ?? ((data) => data);
  const seal = options.seal;
  const keys = layout.auditChain(options.chain);
  let opened = false;
  let broken: unknown;
  let head: AuditHead = { seq: 0, hash: GENESIS };
  // Appended, not yet committed, in seq order; `durable` is the newest head below all of them.
  let pending: { record: AuditRecord; committed: boolean }[] = [];
  // The same entries by sequence number: commit and rollback look theirs up instead of
  // scanning every record not yet durable (which grows with the writes in flight).
  const bySeq = new Map<number, { record: AuditRecord; committed: boolean }>();
  let durable: AuditHead = head;

  const settle = () => {
    while (pending[0]?.committed) {
      const { record } = pending.shift()!;
      bySeq.delete(record.seq);
      durable = { seq: record.seq, hash: record.hash };
    }
    if (seal && durable.seq > 0) seal.heads.save(durable);
  };
  const pendingOf = (ops: readonly StorageOp[], use: string) => {
    const seqs = new Set(ops.map((op) => op.key).filter(keys.is).map(seqOfKey));
    const found = [...seqs].flatMap((seq) => {
      const p = bySeq.get(seq);
      return p && !p.committed ? [p] : [];
    });
    if (found.length !== seqs.size || seqs.size === 0) throw new TypeError(`${use}() takes the ops of an append() not yet committed or rolled back`);
    return found;
  };

  const log: AuditLog = {
    chain: options.chain,
    get head() {
      return head;
    },
    async open(known) {
      if (pending.length > 0) throw new TypeError('open() while appended records are neither committed nor rolled back');
      const { keyId, ...stored } = known ?? (await storedAuditHead(storage, options.chain));
      if (keyId !== undefined && keyId !== seal?.key.id) {
        throw new TroupeError(
          seal ? ErrorCode.AUDIT_KEY_MISMATCH : ErrorCode.AUDIT_KEY_MISSING,
          seal
            ? `the audit log of ${storage.location} is keyed with key ${keyId}, not with the key found (${seal.key.id}); restore the audit directory that belongs to this database`
            : `the audit log of ${storage.location} is keyed (key ${keyId}) and no key was given: appending unkeyed records would look like forgery`,
          { details: { keyId } },
        );
      }
      head = stored;
      if (seal) {
        const saved = await seal.heads.newest();
        // Records were removed from the end: continue after the saved head, never reusing a
        // sequence number; verify reports the gap.
        if (saved && saved.seq > head.seq) head = saved;
      }
      durable = head;
      broken = undefined;
      opened = true;
    },
    append(entries, appendOptions = {}) {
      if (!opened) throw new TypeError('audit log: call open() before append(), or sequence numbers would restart at 1');
      if (broken) {
        throw new TroupeError(ErrorCode.STORAGE_FAILED, 'audit log is out of sync with storage after a failed write; call open() again', { cause: broken });
      }
      for (const entry of entries) assertEntry(entry);
      const ops: StorageOp[] = [];
      let last = head;
      const built: AuditRecord[] = [];
      const state = appendOptions.state && Object.keys(appendOptions.state).length > 0 ? appendOptions.state : undefined;
      for (const [i, entry] of entries.entries()) {
        const body: Omit<AuditRecord, 'hash'> = {
          seq: last.seq + 1,
          ts: entry.ts ?? clock.now(),
          kind: entry.kind,
          runId: entry.runId,
          actor: entry.actor,
          data: toJsonValue(redact(entry.data ?? {})) as Record<string, unknown>,
          prev: last.hash,
          ...(seal ? { keyId: seal.key.id } : {}),
          ...(state && i === entries.length - 1 ? { state } : {}),
        };
        const record: AuditRecord = { ...body, hash: seal ? macRecord(body, seal.key) : hashRecord(body) };
        built.push(record);
        ops.push({ type: 'put', key: keys.key(record.seq), value: encode(record) });
        last = { seq: record.seq, hash: record.hash };
      }
      // Only after every entry was built: a throwing entry leaves the log untouched.
      head = last;
      for (const record of built) {
        const entry = { record, committed: false };
        pending.push(entry);
        bySeq.set(record.seq, entry);
      }
      return ops;
    },
    commit(ops) {
      if (ops.length === 0) return;
      for (const p of pendingOf(ops, 'commit')) p.committed = true;
      settle();
    },
    async rollback(ops) {
      if (ops.length === 0) return;
      const failed = pendingOf(ops, 'rollback');
      const newest = pending[pending.length - 1]!;
      if (failed.includes(newest)) {
        pending = pending.filter((p) => !failed.includes(p));
        for (const p of failed) bySeq.delete(p.record.seq);
        head = { seq: failed[0]!.record.seq - 1, hash: failed[0]!.record.prev };
        return;
      }
      // Their batch's values never landed, so what the records committed to must not be
      // checked: a record saying so goes with them (verify drops those commitments).
      const committing = failed.filter((p) => p.record.state).map((p) => p.record.seq);
      const voided = committing.length > 0
        ? log.append([{ kind: BATCH_FAILED, runId: failed[0]!.record.runId, actor: failed[0]!.record.actor, data: { records: committing } }])
        : [];
      try {
        await storage.write([...ops.filter((op) => keys.is(op.key)), ...voided]);
        for (const p of failed) p.committed = true;
        settle();
        log.commit(voided);
      } catch (error) {
        broken = error;
        pending = [];
        bySeq.clear();
        throw new TroupeError(ErrorCode.STORAGE_FAILED, 'audit log could not restore records later ones link to; call open() again', { cause: error });
      }
    },
    async flush() {
      await seal?.heads.flush();
    },
    async write(entries, writeOptions = {}) {
      const ops = log.append(entries);
      try {
        await storage.write([...(writeOptions.with ?? []), ...ops], writeOptions.sync === undefined ? {} : { sync: writeOptions.sync });
      } catch (error) {
        await log.rollback(ops).catch(() => {});
        throw error;
      }
      log.commit(ops);
      return ops.map((op) => decode((op as { value: Uint8Array }).value, Infinity) as AuditRecord);
    },
    async read(query = {}) {
      const out: AuditRecord[] = [];
      const range = query.after === undefined ? keys.range() : keys.after(query.after);
      for await (const [key, value] of storage.entries(range)) {
        // Not a record of this log, whatever it holds; verify() reports it.
        if (keys.seqOf(key) === undefined) continue;
        const record = decodeOrUndefined(value);
        if (!isRecord(record)) {
          throw new TroupeError(ErrorCode.STORAGE_FAILED, `audit record ${seqOfKey(key)} is unreadable; run verify()`, { details: { seq: seqOfKey(key) } });
        }
        if ((query.runId === undefined || record.runId === query.runId) && (query.kind === undefined || record.kind === query.kind)) out.push(record);
      }
      return out;
    },
    async verify(verifyOptions = {}) {
      const saved = seal ? await seal.heads.last() : undefined;
      const anchors = [durable, ...(verifyOptions.anchor ? [verifyOptions.anchor] : []), ...(saved?.state === 'ok' ? [saved.head] : [])];
      const checker = createChainChecker(anchors, seal?.key, keys);
      for await (const [key, value] of storage.entries(keys.range())) {
        const failure = checker.next(key, decodeOrUndefined(value));
        if (failure) return failure;
      }
      const verdict = await checker.finish(saved?.state === 'ok' ? saved.head : undefined, storage);
      if (verdict.ok && saved?.state === 'damaged') {
        return { ok: false, firstBad: verdict.head.seq + 1, reason: 'unverifiable', message: `${saved.message}: removal of the newest records cannot be ruled out` };
      }
      return verdict;
    },
  };
  return log;
}
