import { mkdir } from 'node:fs/promises';
import { ClassicLevel } from 'classic-level';
import { ErrorCode, TroupeError } from '../core/errors.js';
import type { KeyRange, Status, Storage, StorageOp, WriteOptions } from '../core/storage.js';

/** Options of {@link levelStorage}. */
export interface LevelStorageOptions {
  /** Directory of the LevelDB database; created when missing. */
  path: string;
  /** Default for {@link WriteOptions.sync}. Default `false` (survives SIGKILL, not power loss). */
  sync?: boolean;
}

/**
 * A {@link Storage} on LevelDB (classic-level). Opens the database before resolving; a
 * directory held by another process fails with a clear `STORAGE_FAILED` error.
 */
export async function levelStorage(options: LevelStorageOptions): Promise<Storage> {
  if (typeof options?.path !== 'string' || options.path.length === 0) {
    throw new TypeError('levelStorage({ path }) needs a directory path');
  }
  const defaultSync = options.sync ?? false;
  await mkdir(options.path, { recursive: true });
  const db = new ClassicLevel<string, Uint8Array>(options.path, { keyEncoding: 'utf8', valueEncoding: 'view' });
  let status: Status = 'opening';
  try {
    await db.open();
  } catch (cause) {
    const locked = /lock/i.test(String((cause as { cause?: unknown }).cause ?? cause));
    throw new TroupeError(
      ErrorCode.STORAGE_FAILED,
      locked
        ? `database at ${options.path} is in use by another process (LevelDB allows one at a time)`
        : `cannot open database at ${options.path}`,
      { cause, details: { path: options.path } },
    );
  }
  status = 'open';
  let closing: Promise<void> | undefined;

  const ensureOpen = () => {
    if (status !== 'open') throw new TroupeError(ErrorCode.STORAGE_CLOSED, `storage at ${options.path} is ${status}`);
  };

  const storage: Storage = {
    location: options.path,
    get status() {
      return status;
    },
    async get(key) {
      ensureOpen();
      return (await db.get(key)) ?? undefined;
    },
    async write(ops: readonly StorageOp[], writeOptions: WriteOptions = {}) {
      ensureOpen();
      if (ops.length === 0) return;
      await db.batch(
        ops.map((op) => (op.type === 'put' ? { type: 'put', key: op.key, value: op.value } : { type: 'del', key: op.key })),
        { sync: writeOptions.sync ?? defaultSync },
      );
    },
    async *entries(range: KeyRange) {
      ensureOpen();
      const iterator = db.iterator({
        ...(range.gte !== undefined ? { gte: range.gte } : {}),
        ...(range.lt !== undefined ? { lt: range.lt } : {}),
        reverse: range.reverse ?? false,
        limit: range.limit ?? -1,
      });
      try {
        for await (const entry of iterator) yield entry;
      } finally {
        await iterator.close();
      }
    },
    close() {
      if (status === 'closed') return Promise.resolve();
      closing ??= (async () => {
        status = 'closing';
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
