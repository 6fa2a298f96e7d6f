/**
 * The commands the CLI suggests (how to resume a run, how to decide an approval), spelled
 * with the `--db` in use so they can be pasted as they are.
 * @module
 */
import { isDatabaseUrl } from './open-storage.js';

/** Where runs are kept unless `--db` says otherwise. */
export const DEFAULT_DB = './.troupe';

/** A shell word: left bare when it is plainly safe, else single-quoted. */
export function shellWord(value: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

/** ` --db DIR`, or nothing for the default database (the same one either way). */
export function dbFlag(db: string): string {
  return db === DEFAULT_DB ? '' : ` --db ${shellWord(withoutPassword(db))}`;
}

/**
 * A `postgres://` URL as hints print it: without its password, which belongs in
 * `PGPASSWORD` or `~/.pgpass`, not in a terminal's scrollback.
 */
function withoutPassword(db: string): string {
  if (!isDatabaseUrl(db)) return db;
  try {
    const url = new URL(db);
    if (!url.password) return db;
    url.password = '';
    return url.toString();
  } catch {
    return db;
  }
}

/** `troupe resume <run-id> [--db DIR]`. */
export function resumeHint(runId: string, db: string): string {
  return `troupe resume ${shellWord(runId)}${dbFlag(db)}`;
}

/** How to decide approval `approvalId`: approve (as it is, with a result, or edited) or reject. */
export function decideHint(approvalId: string, db: string): string {
  const id = shellWord(approvalId);
  return `troupe approve ${id}${dbFlag(db)} [--result JSON | --edit-args JSON]   or   troupe reject ${id}${dbFlag(db)} --reason TEXT`;
}
