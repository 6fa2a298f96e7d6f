import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { ApprovalRecord } from '../approvals.js';
import { canonicalJson } from '../audit-log.js';
import { blobHashOf, blobRefs } from '../blobs.js';
import { decode, encode } from '../codec.js';
import { ErrorCode, TroupeError } from '../errors.js';
import { RUN_ID } from '../ids.js';
import { assertRunId, LAYOUT_VERSION, layout } from '../layout.js';
import type { LedgerEntry, RunRecord } from '../run-store.js';
import { createRedactor, envSecrets, type SecretsProvider } from '../secrets.js';
import type { Storage, StorageOp } from '../storage.js';

/**
 * A portable recording: one run as one file (`troupe export`), everything a replay or a
 * resume reads of it: the run record, its checkpoints and actor records, conversation logs,
 * journal, effect ledger, undelivered mail, its approvals and the blobs its records refer to.
 * JSON, so it can be read and kept next to a test; values that JSON cannot carry exactly
 * travel as their msgpack bytes in base64. Redacted on the way out, validated (and bounded)
 * on the way in, and imported in one batch or not at all.
 */

/** The `format` of a recording file. */
export const RECORDING_FORMAT = 'troupe.recording';
/** The version of the format this code writes and reads. */
export const RECORDING_VERSION = 1;

/** Limits of {@link parseRecording}: a file beyond them is refused before anything is read into a database. */
export interface RecordingLimits {
  /** Bytes of the file. Default 256 MiB. */
  maxBytes: number;
  /** Keys it may hold. Default 1 000 000. */
  maxEntries: number;
}

/** The limits {@link parseRecording} applies unless told otherwise. */
export const DEFAULT_RECORDING_LIMITS: RecordingLimits = { maxBytes: 256 * 1024 * 1024, maxEntries: 1_000_000 };

const MAX_KEY = 1024;

const EntrySchema = z.union([z.object({ k: z.string().min(1).max(MAX_KEY), v: z.unknown() }).strict(), z.object({ k: z.string().min(1).max(MAX_KEY), b: z.base64() }).strict()]);

/** The schema of a recording file. */
export const RecordingFileSchema = z
  .object({
    format: z.literal(RECORDING_FORMAT),
    version: z.literal(RECORDING_VERSION),
    layout: z.literal(LAYOUT_VERSION),
    runId: z.string().regex(RUN_ID),
    crew: z.string().min(1).max(256),
    exportedAt: z.number().int().nonnegative(),
    /** Secret names the run used: scrubbed when the exporter could resolve them, listed as unresolved otherwise. */
    secrets: z.object({ redacted: z.array(z.string().max(128)).max(1000), unresolved: z.array(z.string().max(128)).max(1000) }).strict(),
    entries: z.array(EntrySchema),
    /** sha256 (hex) of the canonical JSON of `entries`: a file damaged in a way JSON still parses is caught too. */
    digest: z.string().regex(/^[0-9a-f]{64}$/),
  })
  .strict();

/** A recording, as {@link parseRecording} returns it. */
export type RecordingFile = z.infer<typeof RecordingFileSchema>;
type Entry = z.infer<typeof EntrySchema>;

const digestOf = (entries: readonly Entry[]) => createHash('sha256').update(canonicalJson(entries)).digest('hex');

/** `value` survives a trip through JSON unchanged (same msgpack bytes after it). */
const jsonSafe = (value: unknown): boolean => {
  try {
    return Buffer.from(encode(JSON.parse(JSON.stringify(value)) as unknown)).equals(Buffer.from(encode(value)));
  } catch {
    return false;
  }
};

/** Options of {@link exportRecording}. */
export interface ExportOptions {
  /** Where the run's secrets are resolved, to scrub any value of theirs. Default: environment variables. */
  secrets?: SecretsProvider;
  /** When the export happened (ms). Default `Date.now()`. */
  now?: number;
}

/**
 * The recording of `runId` in `storage`. Values are stored redacted already (a run scrubs the
 * secrets it resolved before writing); the export resolves the run's secrets once more, by
 * the names its ledger and checkpoints keep, and scrubs them again, so a run recorded before
 * a redaction rule existed cannot leak through a file. Names it cannot resolve are listed.
 */
export async function exportRecording(storage: Storage, runId: string, options: ExportOptions = {}): Promise<RecordingFile> {
  assertRunId(runId);
  const rawRun = await storage.get(layout.run(runId));
  if (!rawRun) throw new TroupeError(ErrorCode.RUN_NOT_FOUND, `no run "${runId}" in ${storage.location}`, { details: { runId } });
  const run = decode(rawRun, Infinity) as RunRecord;
  const values: Array<[string, unknown, Uint8Array]> = [[layout.run(runId), run, rawRun]];
  for (const range of layout.perRun(runId)) for await (const [key, raw] of storage.entries(range)) values.push([key, decode(raw, Infinity), raw]);
  for await (const [key, raw] of storage.entries(layout.approvals())) {
    const approval = decode(raw, Infinity) as ApprovalRecord;
    if (approval.runId === runId) values.push([key, approval, raw]);
  }
  const refs = new Set<string>();
  const names = new Set<string>();
  for (const [key, value] of values) {
    blobRefs(value, refs);
    if (layout.isLedger(key)) for (const name of (value as LedgerEntry).secrets ?? []) names.add(name);
    if (layout.isCheckpoint(key)) for (const name of (value as { secrets?: string[] }).secrets ?? []) names.add(name);
  }
  for (const hash of [...refs].sort()) {
    const raw = await storage.get(layout.blob(hash));
    if (!raw) throw new TroupeError(ErrorCode.STORAGE_CORRUPT, `run "${runId}" refers to blob ${hash}, which is missing from ${storage.location}`, { details: { runId, blob: hash } });
    values.push([layout.blob(hash), decode(raw, Infinity), raw]);
  }
  const provider = options.secrets ?? envSecrets();
  const resolved: string[] = [];
  const redacted: string[] = [];
  const unresolved: string[] = [];
  const signal = new AbortController().signal;
  for (const name of [...names].sort()) {
    const value = await provider.get(name, { signal }).catch(() => undefined);
    if (value) {
      resolved.push(value);
      redacted.push(name);
    } else unresolved.push(name);
  }
  const redact = createRedactor(resolved);
  const entries: Entry[] = values.map(([k, value, raw]) => {
    // A blob is addressed by its content: scrubbing one would break the address, so it is carried as it is (it was redacted when written).
    if (layout.blobHash(k)) return jsonSafe(value) ? { k, v: value } : { k, b: Buffer.from(raw).toString('base64') };
    const clean = redact(value);
    return jsonSafe(clean) ? { k, v: clean } : { k, b: Buffer.from(encode(clean)).toString('base64') };
  });
  return { format: RECORDING_FORMAT, version: RECORDING_VERSION, layout: LAYOUT_VERSION, runId, crew: run.crew, exportedAt: options.now ?? Date.now(), secrets: { redacted, unresolved }, entries, digest: digestOf(entries) };
}

const invalid = (why: string, cause?: unknown, details: Record<string, unknown> = {}) =>
  new TroupeError(ErrorCode.RECORDING_INVALID, `not a usable recording: ${why}; nothing was imported`, { ...(cause ? { cause } : {}), details, retryable: false });

// What a replay and a resume read of the entries, checked here: restore trusts the rest of a record's shape.
const LedgerEntrySchema = z.object({ callId: z.string().min(1).max(MAX_KEY), kind: z.enum(['model', 'tool']), status: z.enum(['intent', 'done']), name: z.string(), ts: z.number() }).passthrough();
const JournalEntrySchema = z.object({ seq: z.number().int().positive(), ts: z.number(), kind: z.string(), actor: z.string(), data: z.record(z.string(), z.unknown()) }).passthrough();
const CheckpointSchema = z.object({ seq: z.number().int().positive(), schemaVersion: z.number().int().positive(), machine: z.object({ id: z.string(), version: z.string() }) }).passthrough();

const RunRecordSchema = z.object({ id: z.string(), crew: z.string(), version: z.string(), status: z.enum(['running', 'waiting', 'completed', 'failed']), input: z.string(), checkpoint: z.number().int().nonnegative(), startedAt: z.number(), updatedAt: z.number(), resumes: z.number().int().nonnegative() }).passthrough();

/**
 * Reads a recording file's text: `RECORDING_INVALID`, saying what is wrong, when it is too
 * large, not JSON (truncated), not of this format or version, its digest does not match, a key
 * is not the run's own, or a blob does not match its hash.
 */
export function parseRecording(text: string | Uint8Array, limits: Partial<RecordingLimits> = {}): RecordingFile {
  const { maxBytes, maxEntries } = { ...DEFAULT_RECORDING_LIMITS, ...limits };
  const size = typeof text === 'string' ? Buffer.byteLength(text) : text.byteLength;
  if (size > maxBytes) throw invalid(`the file has ${size} bytes, more than the limit of ${maxBytes}`, undefined, { size, limit: maxBytes });
  let json: unknown;
  try {
    json = JSON.parse(typeof text === 'string' ? text : Buffer.from(text).toString('utf8'));
  } catch (cause) {
    throw invalid(`it is not JSON (truncated or damaged): ${(cause as Error).message}`, cause);
  }
  const parsed = RecordingFileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw invalid(`${issue.path.join('.') || 'the file'}: ${issue.message}`, parsed.error);
  }
  const file = parsed.data;
  if (file.entries.length > maxEntries) throw invalid(`it holds ${file.entries.length} keys, more than the limit of ${maxEntries}`);
  if (digestOf(file.entries) !== file.digest) throw invalid('its digest does not match its content (the file was changed or damaged after export)');
  const seen = new Set<string>();
  let run: RunRecord | undefined;
  for (const entry of file.entries) {
    if (seen.has(entry.k)) throw invalid(`key ${entry.k} appears twice`);
    seen.add(entry.k);
    const value = valueOf(entry);
    const hash = layout.blobHash(entry.k);
    if (hash !== undefined) {
      if (typeof value !== 'string' || blobHashOf(value) !== hash) throw invalid(`blob ${hash} does not hold the text its hash names`);
    } else if (layout.isApproval(entry.k)) {
      if ((value as { runId?: unknown })?.runId !== file.runId) throw invalid(`approval ${entry.k} belongs to another run`);
    } else if (!layout.ownedByRun(file.runId, entry.k)) throw invalid(`key ${entry.k} is not one of run ${file.runId}'s`);
    else if (layout.isLedger(entry.k)) {
      const ledger = LedgerEntrySchema.safeParse(value);
      if (!ledger.success || entry.k !== layout.ledger(file.runId, ledger.data.callId)) throw invalid(`ledger entry ${entry.k} is malformed or filed under another call id`);
    } else if (layout.isJournal(entry.k)) {
      const fact = JournalEntrySchema.safeParse(value);
      if (!fact.success || entry.k !== layout.journal(file.runId, fact.data.seq)) throw invalid(`journal entry ${entry.k} is malformed or filed under another number`);
    } else if (layout.isCheckpoint(entry.k)) {
      const checkpoint = CheckpointSchema.safeParse(value);
      if (!checkpoint.success || entry.k !== layout.checkpoint(file.runId, checkpoint.data.seq) || checkpoint.data.machine.id !== file.crew) throw invalid(`checkpoint ${entry.k} is malformed, filed under another number or of another crew`);
    }
    if (entry.k === layout.run(file.runId)) {
      const record = RunRecordSchema.safeParse(value);
      if (!record.success || record.data.id !== file.runId || record.data.crew !== file.crew) throw invalid('its run record is malformed or names another run');
      run = record.data as RunRecord;
    }
  }
  if (!run) throw invalid(`it has no record of run ${file.runId}`);
  if (!file.entries.some((e) => layout.isCheckpoint(e.k))) throw invalid('it has no checkpoint');
  return file;
}

/** The stored value of an entry (decoded from its bytes for one JSON could not carry). */
function valueOf(entry: Entry): unknown {
  if ('v' in entry) return entry.v;
  try {
    return decode(Buffer.from(entry.b, 'base64'), Infinity);
  } catch (cause) {
    throw invalid(`the bytes of ${entry.k} are not msgpack`, cause);
  }
}

/**
 * Writes `file` into `storage` in one batch: `RUN_ALREADY_ACTIVE`, writing nothing, when the
 * database has that run (or any key of it, or one of its approvals) already. Blobs the
 * database holds already are left as they are (same hash, same text).
 */
export async function importRecording(storage: Storage, file: RecordingFile): Promise<{ runId: string; keys: number }> {
  const ops: StorageOp[] = [];
  for (const entry of file.entries) {
    const existing = await storage.get(entry.k);
    if (existing) {
      if (layout.blobHash(entry.k)) continue;
      throw new TroupeError(ErrorCode.RUN_ALREADY_ACTIVE, `${storage.location} already has run "${file.runId}" (key ${entry.k}); an import never overwrites one`, { details: { runId: file.runId, key: entry.k } });
    }
    ops.push({ type: 'put', key: entry.k, value: 'v' in entry ? encode(entry.v) : new Uint8Array(Buffer.from(entry.b, 'base64')) });
  }
  await storage.write(ops, { sync: true });
  return { runId: file.runId, keys: ops.length };
}
