import { randomBytes } from 'node:crypto';
import { cp, mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { createLocalClaims } from '../core/claims.js';
import { ErrorCode, TroupeError } from '../core/errors.js';
import { processAlive } from './process-alive.js';
import { assertOps, KEY_END, type KeyRange, type Status, type Storage, type StorageOp, type WriteOptions } from '../core/storage.js';
import { createDeletionCompaction } from './deletion-compaction.js';

/** Options of {@link levelStorage}. */
export interface LevelStorageOptions {
  /** Directory of the LevelDB database. */
  path: string;
  /** Default for {@link WriteOptions.sync}. Default `false` (survives SIGKILL, not power loss). */
  sync?: boolean;
  /**
   * Create the directory and a new, empty database when there is none. Default `true`.
   * With `false` (read commands) a missing directory or database fails with
   * `STORAGE_NOT_FOUND` and nothing is created. Either way a directory that already holds
   * files is never given a new database over them.
   */
  create?: boolean;
  /**
   * Deletes in one key group (`actor:<run>:`, `ckpt:<run>:`, `outbox:<node>:`…) after which
   * the range they span is compacted in the background, so space held by deleted keys comes
   * back while a long run goes on (storage/deletion-compaction.ts). Default 10,000; 0 leaves
   * compaction to LevelDB alone.
   */
  compactAfterDeletes?: number;
}

/** The LevelDB {@link Storage}, with what its background compaction tells an operator. */
export interface LevelStorage extends Storage {
  compact(range?: KeyRange): Promise<void>;
  /** Background compactions (see {@link LevelStorageOptions.compactAfterDeletes}) run so far. */
  readonly compactions: number;
  /** Resolves once no background compaction runs or waits. */
  compactionIdle(): Promise<void>;
}

type Db = ClassicLevel<string, Uint8Array>;

/** The options of a synced batch, one object for every one of them. */
const SYNC = Object.freeze({ sync: true });

/** See {@link LevelStorageOptions.compactAfterDeletes}. */
const DEFAULT_COMPACT_AFTER_DELETES = 10_000;

/** Most bytes one iterator chunk (`nextv`) gathers before it hands them over. */
const ITERATOR_CHUNK_BYTES = 1024 * 1024;

/** LevelDB's own file names: a directory holding one of these but no CURRENT is a damaged database. */
const LEVELDB_FILE = /^(?:\d+\.(?:ldb|sst|log)|MANIFEST-\d+|LOCK|LOG|LOG\.old)$/;

const repairHint = (path: string) => `run \`troupe db repair --db ${path}\` (it backs the directory up first)`;

const corrupt = (path: string, cause: string, error?: unknown) =>
  new TroupeError(ErrorCode.STORAGE_CORRUPT, `database at ${path} is damaged: ${cause}. Its files were left as they were; ${repairHint(path)}`, {
    ...(error === undefined ? {} : { cause: error }),
    details: { path, reason: cause },
  });

const notFound = (path: string, why: string) =>
  new TroupeError(ErrorCode.STORAGE_NOT_FOUND, `no database at ${path} (${why})`, { details: { path } });

const errorCode = (error: unknown): string | undefined => {
  const code = (error as { code?: unknown })?.code;
  return typeof code === 'string' ? code : undefined;
};

/** LevelDB's status text: classic-level wraps open failures in LEVEL_DATABASE_NOT_OPEN with the real error as `cause`. */
const levelCause = (error: unknown): { code: string | undefined; message: string } => {
  const inner = (error as { cause?: unknown })?.cause;
  const source = inner instanceof Error ? inner : error;
  return { code: errorCode(source), message: source instanceof Error ? source.message : String(source) };
};

const exists = async (path: string) => stat(path).then(() => true, () => false);

/**
 * What is in `path` before LevelDB sees it. LevelDB's own checks come too late for us: its
 * open with `createIfMissing` writes a fresh manifest over a directory whose CURRENT is
 * missing and then deletes every table file it does not list (all of them), and even a
 * failing open creates the directory. So the cases we can tell from file names and CURRENT
 * are decided here, touching nothing.
 */
async function inspectDirectory(path: string, create: boolean): Promise<'existing' | 'new'> {
  const info = await stat(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw new TroupeError(ErrorCode.STORAGE_FAILED, `cannot open database at ${path}: ${error.message}`, { cause: error, details: { path } });
  });
  if (!info) {
    if (!create) throw notFound(path, 'the directory does not exist');
    return 'new';
  }
  if (!info.isDirectory()) throw new TroupeError(ErrorCode.STORAGE_FAILED, `cannot open database at ${path}: it is not a directory`, { details: { path } });
  const files = await readdir(path);
  if (files.includes('CURRENT')) {
    const current = await readFile(join(path, 'CURRENT'), 'latin1');
    const manifest = /^(MANIFEST-\d+)\n$/.exec(current)?.[1];
    if (!manifest) throw corrupt(path, `CURRENT does not name a MANIFEST file (it holds ${JSON.stringify(current.slice(0, 40))})`);
    if (!files.includes(manifest)) throw corrupt(path, `CURRENT names ${manifest}, which is missing`);
    return 'existing';
  }
  if (files.length === 0) {
    if (!create) throw notFound(path, 'the directory is empty');
    return 'new';
  }
  const ours = files.filter((f) => LEVELDB_FILE.test(f));
  if (ours.length > 0) throw corrupt(path, `CURRENT is missing (the directory holds ${ours.slice(0, 4).join(', ')}${ours.length > 4 ? ', …' : ''})`);
  if (!create) throw notFound(path, 'the directory holds other files and no database');
  throw new TroupeError(ErrorCode.STORAGE_FAILED, `${path} holds files that are not a LevelDB database; refusing to create one over them`, { details: { path } });
}

/** Where {@link createDatabase} builds a database before it is moved to `path`. */
const SCRATCH_SUFFIX = '.creating-';

/**
 * Creates an empty database at `path` so that a process killed part way leaves nothing
 * there, or a whole database: never a directory that every later open must refuse as
 * damaged. LevelDB writes MANIFEST-000001 before CURRENT, and a run killed between the two
 * (the crash trials found one) left LOCK, LOG and a manifest without CURRENT. So the database
 * is made in a sibling directory, closed, renamed onto `path` (absent or an empty directory),
 * and the rename made durable. Sibling scratch directories of dead processes are removed.
 */
async function createDatabase(path: string): Promise<void> {
  const parent = dirname(path);
  await mkdir(parent, { recursive: true });
  await removeDeadScratch(parent, basename(path));
  const scratch = `${path}${SCRATCH_SUFFIX}${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const fresh = new ClassicLevel<string, Uint8Array>(scratch, { keyEncoding: 'utf8', valueEncoding: 'view', createIfMissing: true, errorIfExists: true });
    await fresh.open();
    await fresh.close();
    try {
      await rename(scratch, path);
    } catch (cause) {
      // Not an empty directory any more: a database (or anything) that appeared since we looked is not ours to replace.
      if ((cause as NodeJS.ErrnoException).code === 'ENOTEMPTY' || (cause as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new TroupeError(ErrorCode.STORAGE_FAILED, `cannot create database at ${path}: something appeared there while it was created`, { cause, details: { path } });
      }
      throw cause;
    }
    const dir = await open(parent, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch (cause) {
    await rm(scratch, { recursive: true, force: true }).catch(() => {});
    if (cause instanceof TroupeError) throw cause;
    throw new TroupeError(ErrorCode.STORAGE_FAILED, `cannot create database at ${path}: ${levelCause(cause).message}`, { cause, details: { path } });
  }
}

/** Removes `<name>.creating-<pid>-…` siblings whose process is gone: creations killed part way. */
async function removeDeadScratch(parent: string, name: string): Promise<void> {
  const prefix = `${name}${SCRATCH_SUFFIX}`;
  for (const entry of await readdir(parent).catch(() => [] as string[])) {
    if (!entry.startsWith(prefix)) continue;
    const pid = Number(/^(\d+)-/.exec(entry.slice(prefix.length))?.[1]);
    // This process's own may be a creation under way; a live process's is.
    if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid || processAlive(pid)) continue;
    await rm(join(parent, entry), { recursive: true, force: true }).catch(() => {});
  }
}

/**
 * What LevelDB's open changes even when it fails: it renames LOG to LOG.old and starts a new
 * LOG before reading anything, and creates LOCK. Taken before an open of an existing
 * database so that a failed open can leave the directory byte for byte as it was.
 */
async function logFiles(path: string) {
  const read = async (name: string) => {
    const file = join(path, name);
    const info = await stat(file).catch(() => undefined);
    return info && { ino: info.ino, bytes: await readFile(file) };
  };
  return { log: await read('LOG'), old: await read('LOG.old'), lock: await exists(join(path, 'LOCK')) };
}

async function undoFailedOpen(path: string, before: Awaited<ReturnType<typeof logFiles>>): Promise<void> {
  const LOG = join(path, 'LOG');
  const OLD = join(path, 'LOG.old');
  const oldNow = await stat(OLD).catch(() => undefined);
  // Renamed back rather than rewritten: a process holding the database keeps writing to that
  // inode, and it stays its LOG.
  if (before.log && oldNow?.ino === before.log.ino) await rename(OLD, LOG);
  else if (before.log) await writeFile(LOG, before.log.bytes);
  else await unlink(LOG).catch(() => {});
  if (before.old) {
    const now = await readFile(OLD).catch(() => undefined);
    if (!now || !now.equals(before.old.bytes)) await writeFile(OLD, before.old.bytes);
  } else await unlink(OLD).catch(() => {});
  if (!before.lock) await unlink(join(path, 'LOCK')).catch(() => {});
}

/** Maps LevelDB's open failure of an existing database to a Troupe error. */
function openError(path: string, error: unknown): TroupeError {
  const { code, message } = levelCause(error);
  if (code === 'LEVEL_LOCKED') {
    return new TroupeError(ErrorCode.STORAGE_FAILED, `database at ${path} is in use by another process (LevelDB allows one at a time)`, { cause: error, details: { path, locked: true } });
  }
  if (code === 'LEVEL_CORRUPTION') return corrupt(path, message, error);
  // A file CURRENT or the manifest refers to is gone (LevelDB reports it as an I/O error).
  if (code === 'LEVEL_IO_ERROR' && /No such file or directory/i.test(message)) return corrupt(path, message, error);
  if (/does not exist \(create_if_missing is false\)/.test(message)) return corrupt(path, 'CURRENT is missing', error);
  return new TroupeError(ErrorCode.STORAGE_FAILED, `cannot open database at ${path}: ${message}`, { cause: error, details: { path } });
}

/** A read that hit a damaged table file (a bad checksum, a truncated file) fails with STORAGE_CORRUPT. */
function readError(path: string, error: unknown): unknown {
  const code = errorCode(error);
  if (code === 'LEVEL_CORRUPTION' || code === 'LEVEL_IO_ERROR') {
    const message = error instanceof Error ? error.message : String(error);
    return new TroupeError(
      ErrorCode.STORAGE_CORRUPT,
      `database at ${path} is damaged: reading it failed with "${message}". Nothing was written to it; ${repairHint(path)}`,
      { cause: error, details: { path, reason: message } },
    );
  }
  return error;
}

/**
 * A {@link Storage} on LevelDB (classic-level). Opens the database before resolving; a
 * directory held by another process fails with a clear `STORAGE_FAILED` error, a damaged
 * database (CURRENT, the manifest or a table file missing, garbage in CURRENT, a corrupt
 * table found on read) with `STORAGE_CORRUPT`, leaving every file as it was.
 */
export async function levelStorage(options: LevelStorageOptions): Promise<LevelStorage> {
  if (typeof options?.path !== 'string' || options.path.length === 0) {
    throw new TypeError('levelStorage({ path }) needs a directory path');
  }
  const path = options.path;
  const defaultSync = options.sync ?? false;
  const compactAfterDeletes = options.compactAfterDeletes ?? DEFAULT_COMPACT_AFTER_DELETES;
  if (!Number.isInteger(compactAfterDeletes) || compactAfterDeletes < 0) throw new TypeError(`compactAfterDeletes must be a non-negative integer (0 turns it off), got ${String(options.compactAfterDeletes)}`);
  const kind = await inspectDirectory(path, options.create ?? true);
  let db: Db;
  if (kind === 'new') {
    await createDatabase(path);
    db = new ClassicLevel<string, Uint8Array>(path, { keyEncoding: 'utf8', valueEncoding: 'view', createIfMissing: false });
    try {
      await db.open();
    } catch (cause) {
      throw openError(path, cause);
    }
  } else {
    const before = await logFiles(path);
    // Never createIfMissing on an existing directory: that is what wipes a damaged database.
    db = new ClassicLevel<string, Uint8Array>(path, { keyEncoding: 'utf8', valueEncoding: 'view', createIfMissing: false });
    try {
      await db.open();
    } catch (cause) {
      await undoFailedOpen(path, before).catch(() => {});
      throw openError(path, cause);
    }
  }
  let status: Status = 'open';
  let closing: Promise<void> | undefined;
  const pending = new Set<Promise<void>>();

  const ensureOpen = () => {
    if (status !== 'open') throw new TroupeError(ErrorCode.STORAGE_CLOSED, `storage at ${path} is ${status}`);
  };
  const compactRange = async (first: string, last: string) => {
    try {
      await db.compactRange(first, last);
    } catch (error) {
      throw readError(path, error);
    }
  };
  const compaction = createDeletionCompaction({ threshold: compactAfterDeletes, compact: compactRange });
  const batch = async (ops: readonly StorageOp[], sync: boolean) => {
    try {
      // A chained batch, options given once to its write: abstract-level's array form copies
      // the options into every op (`{ ...options, ...op }`), and ops carrying `sync` made the
      // preparation of a step's batch 3-4x slower (~40 against 100-250 us of the main thread,
      // measured on classic-level alone); the chained form is as fast as the array without.
      const chain = db.batch();
      try {
        for (const op of ops) {
          if (op.type === 'put') chain.put(op.key, op.value);
          else chain.del(op.key);
        }
      } catch (error) {
        await chain.close();
        throw error;
      }
      await (sync ? chain.write(SYNC) : chain.write());
    } catch (error) {
      // A background compaction that met a damaged table makes every later write fail so.
      throw errorCode(error) === 'LEVEL_CORRUPTION' ? readError(path, error) : error;
    }
    compaction.committed(ops);
  };
  /** The greatest key in `range`, if any. */
  const lastKey = async (range: KeyRange): Promise<string | undefined> => {
    for await (const [key] of storage.entries({ ...range, reverse: true, limit: 1 })) return key;
    return undefined;
  };
  const claims = createLocalClaims({
    location: path,
    get: (key) => storage.get(key),
    put: async (key, value) => {
      ensureOpen();
      await batch([{ type: 'put', key, value }], defaultSync);
    },
  });

  const storage: LevelStorage = {
    location: path,
    get status() {
      return status;
    },
    async get(key) {
      ensureOpen();
      try {
        return (await db.get(key)) ?? undefined;
      } catch (error) {
        throw readError(path, error);
      }
    },
    async write(ops: readonly StorageOp[], writeOptions: WriteOptions = {}) {
      ensureOpen();
      assertOps(ops);
      const done = claims.fenced(writeOptions.fence, async () => {
        if (ops.length > 0) await batch(ops, writeOptions.sync ?? defaultSync);
      });
      pending.add(done);
      try {
        return await done;
      } finally {
        pending.delete(done);
      }
    },
    async *entries(range: KeyRange) {
      ensureOpen();
      const iterator = db.iterator({
        ...(range.gte !== undefined ? { gte: range.gte } : {}),
        ...(range.lt !== undefined ? { lt: range.lt } : {}),
        reverse: range.reverse ?? false,
        limit: range.limit ?? -1,
        // classic-level stops a chunk at 16 KiB by default: a chunk of one packed log
        // segment each, one thread-pool round trip per segment, was most of a long
        // conversation's resume. The bound still caps what one chunk holds in memory.
        highWaterMarkBytes: ITERATOR_CHUNK_BYTES,
      });
      try {
        // Entries come from LevelDB in chunks: one native call and one promise per chunk
        // instead of per entry (a resume reads thousands of conversation entries).
        for (let size = 64; ; size = Math.min(size * 4, 4096)) {
          const chunk = await iterator.nextv(size);
          if (chunk.length === 0) break;
          for (const entry of chunk) yield entry;
        }
      } catch (error) {
        throw readError(path, error);
      } finally {
        await iterator.close();
      }
    },
    async claim(runId, owner) {
      ensureOpen();
      return claims.claim(runId, owner);
    },
    get compactions() {
      return compaction.compactions;
    },
    compactionIdle: () => compaction.idle(),
    async compact(range: KeyRange = {}) {
      ensureOpen();
      // Bounds, not the live keys at the edges: the tombstones beyond those are reclaimed too.
      // Compacting the key `lt` itself as well changes nothing. Troupe's keys are ASCII: the
      // top of their space bounds a whole-database compaction unless a key lies beyond it.
      let last = range.lt;
      if (last === undefined) {
        const greatest = await lastKey(range);
        last = greatest !== undefined && greatest > KEY_END ? greatest : KEY_END;
      }
      const done = compactRange(range.gte ?? '', last);
      pending.add(done);
      try {
        await done;
      } finally {
        pending.delete(done);
      }
    },
    async release(claim) {
      if (status === 'open') claims.release(claim);
    },
    close() {
      if (status === 'closed') return Promise.resolve();
      closing ??= (async () => {
        status = 'closing';
        claims.clear();
        // LevelDB would finish the batches anyway; waiting here also lets their callers see
        // them settle before close resolves, which is what the interface promises.
        await Promise.allSettled([...pending]);
        // LevelDB must not be closed under a compaction a thread-pool thread is running.
        await compaction.stop();
        await db.close();
        status = 'closed';
      })();
      return closing;
    },
    [Symbol.asyncDispose]() {
      return storage.close();
    },
  };
  return storage;
}

/** What {@link repairLevelStorage} did. */
export interface LevelRepair {
  /** Absolute path of the copy of the directory taken before repairing. */
  backup: string;
}

/**
 * Repairs a damaged LevelDB database with LevelDB's own repair (`RepairDB`: it rebuilds the
 * manifest from the table and log files it finds, and drops what it cannot read). It first
 * copies the whole directory to `<path>.backup-<timestamp>` next to it, because repair may
 * discard data that a specialist could still recover from the original files. Refuses a
 * database another process holds open (repair does not take LevelDB's lock itself).
 */
export async function repairLevelStorage(path: string, options: { now?: () => Date } = {}): Promise<LevelRepair> {
  if (typeof path !== 'string' || path.length === 0) throw new TypeError('repairLevelStorage(path) needs a directory path');
  const dir = resolve(path);
  const info = await stat(dir).catch(() => undefined);
  if (!info?.isDirectory()) throw notFound(path, 'the directory does not exist');
  if ((await readdir(dir)).length === 0) throw notFound(path, 'the directory is empty; there is nothing to repair');
  const stamp = (options.now?.() ?? new Date()).toISOString().replace(/[:.]/g, '-');
  const backup = `${dir}.backup-${stamp}`;
  await cp(dir, backup, { recursive: true, errorOnExist: true, force: false, preserveTimestamps: true });
  // The only way to ask for LevelDB's lock is to open: a live holder makes it fail with
  // LEVEL_LOCKED; any other outcome (damage included) means nobody holds it.
  const probe = new ClassicLevel(dir, { createIfMissing: false });
  try {
    await probe.open();
    await probe.close();
  } catch (error) {
    if (levelCause(error).code === 'LEVEL_LOCKED') {
      // The copy was taken of a database in use, so it may be torn; it is not a backup.
      await rm(backup, { recursive: true, force: true });
      throw new TroupeError(ErrorCode.STORAGE_FAILED, `database at ${path} is in use by another process; stop it before repairing`, { cause: error, details: { path } });
    }
  }
  try {
    await ClassicLevel.repair(dir);
  } catch (error) {
    throw new TroupeError(ErrorCode.STORAGE_FAILED, `LevelDB could not repair ${path}: ${levelCause(error).message} (the backup is at ${backup})`, { cause: error, details: { path, backup } });
  }
  return { backup };
}
