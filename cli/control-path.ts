/**
 * Where the control socket of a database lives: the one rule, shared by the node that
 * listens and the commands that connect.
 * @module
 */
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/**
 * Longest socket path, in bytes, used as is. Linux's `sun_path` holds 108 bytes with the
 * terminating NUL, macOS's 104: a longer path fails to bind (or is silently cut), so it is
 * replaced by a short one.
 */
export const MAX_SOCKET_PATH_BYTES = 100;

/**
 * The control socket of the database at `db`: `<db>.control.sock` beside the directory (not
 * inside it, where `troupe db repair`'s copy of the directory would meet a socket file), or,
 * when that path is too long for a Unix socket, `troupe-<hash>.sock` in the temporary
 * directory, keyed by the absolute database path so every process derives the same one.
 */
export function controlSocketPath(db: string): string {
  const absolute = resolve(db);
  const beside = `${absolute}.control.sock`;
  if (Buffer.byteLength(beside) <= MAX_SOCKET_PATH_BYTES) return beside;
  const key = createHash('sha256').update(absolute).digest('hex').slice(0, 24);
  return join(tmpdir(), `troupe-${key}.sock`);
}
