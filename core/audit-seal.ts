import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { link, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, TroupeError } from './errors.js';

/**
 * What keeps the audit log honest from outside its database: a node secret the records are
 * keyed with (HMAC-SHA256), and the heads committed so far. Both live in one directory that
 * is not the database (default `<db>.audit/`, see core/security.ts), so someone who can edit
 * the database but not this directory can neither forge nor re-chain records (they lack the
 * key), nor delete the newest ones unnoticed (the saved head names a record that is gone).
 *
 * - `key`    64 hex characters (32 random bytes), mode 0600, written once on first use.
 * - `heads`  append-only lines `<seq> <hash> <mac>`, each fsynced; `mac` keys the line so a
 *            hand-edited head is told apart from one the node wrote. Rewritten down to its
 *            last line once it outgrows {@link HEADS_COMPACT_BYTES}.
 *
 * Losing the key makes every keyed record unverifiable forever: back the directory up with
 * the database, but separately from it.
 */

/** The secret audit records are keyed with, and its public id (recorded in each record). */
export interface AuditKey {
  /** First 16 hex characters of the sha256 of the secret: names the key, reveals nothing. */
  readonly id: string;
  readonly secret: Uint8Array;
}

/** A head saved outside the database: record `seq` was durable with hash `hash`. */
export interface SavedHead {
  seq: number;
  hash: string;
}

/** What {@link AuditHeadStore.last} found. */
export type SavedHeadState =
  | { state: 'ok'; head: SavedHead }
  /** The file is gone, empty or has a line the key did not sign: truncation cannot be ruled out. */
  | { state: 'damaged'; message: string };

/** The saved heads of one audit log. */
export interface AuditHeadStore {
  /** Where the heads are kept, for messages. */
  readonly path: string;
  /** The newest head saved (the file's last complete, correctly keyed line), every line checked. */
  last(): Promise<SavedHeadState>;
  /**
   * The newest head saved, checking that line alone: what opening the log needs (where to
   * continue), without checking hundreds of older lines at every start.
   */
  newest(): Promise<SavedHead | undefined>;
  /**
   * Saves `head` in the background. Writes are coalesced: while one is on its way to disk
   * newer heads only replace the one to write next, so a burst of commits costs one or two
   * fsyncs, and the newest committed head reaches disk within about one fsync.
   */
  save(head: SavedHead): void;
  /** Resolves once every head handed to {@link save} is on disk; rejects with a failed write. */
  flush(): Promise<void>;
}

/** The key and head store in an audit directory; see {@link openAuditSeal}. */
export interface AuditSeal {
  readonly dir: string;
  readonly key: AuditKey;
  readonly heads: AuditHeadStore;
  /** Whether this call created the key. */
  readonly created: boolean;
}

/** Size of the heads file beyond which it is rewritten down to its newest line. */
export const HEADS_COMPACT_BYTES = 64 * 1024;

const KEY_FILE = 'key';
const HEADS_FILE = 'heads';
const KEY_TEXT = /^[0-9a-f]{64}\n?$/;

/** The key with `secret`. */
export function auditKeyOf(secret: Uint8Array): AuditKey {
  return { id: createHash('sha256').update(secret).digest('hex').slice(0, 16), secret };
}

const headMac = (key: AuditKey, head: SavedHead) => createHmac('sha256', key.secret).update(`troupe-audit-head:${head.seq}:${head.hash}`).digest('hex');
const headLine = (key: AuditKey, head: SavedHead) => `${head.seq} ${head.hash} ${headMac(key, head)}\n`;

/** The complete lines of the heads file: a last line without its newline is a write cut short by a crash. */
function completeLines(text: string): string[] {
  const lines = text.split('\n');
  if (!text.endsWith('\n')) lines.pop();
  return lines;
}

function parseHeadLine(key: AuditKey, line: string): SavedHead | undefined {
  const m = /^(\d{1,15}) ([0-9a-f]{64}) ([0-9a-f]{64})$/.exec(line);
  if (!m) return undefined;
  const head = { seq: Number(m[1]), hash: m[2]! };
  const ok = timingSafeEqual(Buffer.from(headMac(key, head), 'hex'), Buffer.from(m[3]!, 'hex'));
  return ok ? head : undefined;
}

async function writeDurably(path: string, text: string, flag: 'a' | 'wx' | 'w'): Promise<void> {
  const handle = await open(path, flag, 0o600);
  try {
    await handle.writeFile(text);
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

/** The heads file of `dir`, keyed with `key`. */
export function auditHeadStore(dir: string, key: AuditKey): AuditHeadStore {
  const path = join(dir, HEADS_FILE);
  let next: SavedHead | undefined;
  let written: SavedHead | undefined;
  let running: Promise<void> | undefined;
  let failure: unknown;

  const writeOne = async (head: SavedHead) => {
    const size = await stat(path).then((s) => s.size, () => 0);
    if (size > HEADS_COMPACT_BYTES) {
      // Rename over the old file: a crash leaves either the old lines or the new one, never neither.
      const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
      await writeDurably(temp, headLine(key, head), 'wx');
      await rename(temp, path);
    } else {
      await writeDurably(path, headLine(key, head), 'a');
    }
    written = head;
  };
  const drain = async () => {
    while (next && (!written || next.seq > written.seq)) {
      const head = next;
      try {
        await writeOne(head);
        failure = undefined;
      } catch (error) {
        failure = error;
        return;
      }
    }
  };

  return {
    path,
    async last() {
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        return { state: 'damaged', message: `the saved heads (${path}) are missing` };
      }
      // A line cut short by a crash is not a sign of tampering.
      const lines = completeLines(text);
      let head: SavedHead | undefined;
      for (const [i, line] of lines.entries()) {
        if (line === '') continue;
        const parsed = parseHeadLine(key, line);
        if (!parsed) return { state: 'damaged', message: `line ${i + 1} of the saved heads (${path}) was not written with this key` };
        if (head && parsed.seq < head.seq) return { state: 'damaged', message: `line ${i + 1} of the saved heads (${path}) goes back from ${head.seq} to ${parsed.seq}` };
        head = parsed;
      }
      return head ? { state: 'ok', head } : { state: 'damaged', message: `the saved heads (${path}) are empty` };
    },
    async newest() {
      let text = '';
      try {
        // Read at a node's start, at most 64 KiB (HEADS_COMPACT_BYTES) and usually one line:
        // a synchronous read costs less than the four thread-pool round trips of an async one.
        text = readFileSync(path, 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
      const line = completeLines(text).filter((l) => l !== '').at(-1);
      return line === undefined ? undefined : parseHeadLine(key, line);
    },
    save(head) {
      if (next && head.seq <= next.seq) return;
      next = head;
      running ??= drain().finally(() => {
        running = undefined;
      });
    },
    async flush() {
      while (running) await running;
      if (failure) throw new TroupeError(ErrorCode.STORAGE_FAILED, `could not save the audit head to ${path}`, { cause: failure });
      if (next && (!written || next.seq > written.seq)) {
        await drain();
        if (failure) throw new TroupeError(ErrorCode.STORAGE_FAILED, `could not save the audit head to ${path}`, { cause: failure });
      }
    },
  };
}

/**
 * Opens the audit directory `dir`: reads its key, or with `create` makes the directory
 * (0700), a fresh key (0600) and the heads file starting at `initial` (the database's head
 * at that moment, so the first saved head exists before any keyed record does). Without
 * `create` a missing key is `AUDIT_KEY_MISSING`.
 */
export async function openAuditSeal(dir: string, options: { create: boolean; initial?: SavedHead }): Promise<AuditSeal> {
  const keyPath = join(dir, KEY_FILE);
  let text: string | undefined;
  try {
    // 65 bytes, read at every start: synchronously, as {@link AuditHeadStore.newest} reads.
    text = readFileSync(keyPath, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  let created = false;
  // A key file a killed process left half-written, before any record was keyed with it
  // (`create` says the database has none): nothing depends on it, so it is replaced.
  const damaged = text !== undefined && !KEY_TEXT.test(text) && options.create;
  if (text === undefined || damaged) {
    if (!options.create) {
      throw new TroupeError(ErrorCode.AUDIT_KEY_MISSING, `no audit key at ${keyPath}: the audit log cannot be verified without the key it was written with (restore the directory ${dir} from a backup, or pass the right --audit-dir)`, { details: { path: keyPath } });
    }
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const secret = randomBytes(32);
    // Written whole to a file of its own first: a kill at any moment leaves either no key or
    // the whole key, never a file that holds part of one.
    const temp = `${keyPath}.${randomBytes(6).toString('hex')}.tmp`;
    await writeDurably(temp, `${secret.toString('hex')}\n`, 'wx');
    try {
      // `link` fails when the key exists: two processes racing to create it keep one key.
      if (damaged) await rename(temp, keyPath);
      else {
        await link(temp, keyPath).catch(async (error: NodeJS.ErrnoException) => {
          // A file system without hard links: create it in place, as exclusive as `link`.
          if (error.code !== 'EPERM' && error.code !== 'ENOTSUP' && error.code !== 'ENOSYS') throw error;
          await writeDurably(keyPath, `${secret.toString('hex')}\n`, 'wx');
        });
      }
      created = true;
      const key = auditKeyOf(secret);
      await writeDurably(join(dir, HEADS_FILE), headLine(key, options.initial ?? { seq: 0, hash: '0'.repeat(64) }), 'w');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
        if (created) await rm(keyPath, { force: true });
        throw error;
      }
    } finally {
      await rm(temp, { force: true });
    }
    text = await readFile(keyPath, 'utf8');
  }
  if (!KEY_TEXT.test(text)) throw new TroupeError(ErrorCode.AUDIT_KEY_MISSING, `the audit key at ${keyPath} is not 64 hex characters`, { details: { path: keyPath } });
  const key = auditKeyOf(Buffer.from(text.trim(), 'hex'));
  return { dir, key, heads: auditHeadStore(dir, key), created };
}
