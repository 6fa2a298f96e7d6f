/**
 * How a read command gets at a database: itself when it is free, else through the control
 * socket of the node that holds it (LevelDB admits one process at a time).
 * @module
 */
import { ErrorCode, isTroupeError } from '../core/errors.js';
import type { Storage } from '../core/storage.js';
import { isDatabaseUrl, openStorage } from './open-storage.js';
import { connectControl, type ControlClient } from './control-client.js';
import { createRemoteStorage } from './remote-storage.js';

/** A database opened for reading; `control` is set when a running node answers for it. */
export interface ReadDatabase extends AsyncDisposable {
  storage: Storage;
  control: ControlClient | undefined;
}

/** Whether `error` says another process holds the database (storage/level.ts). */
export function isLockedError(error: unknown): boolean {
  return isTroupeError(error, ErrorCode.STORAGE_FAILED) && error.details.locked === true;
}

/**
 * Opens the database at `db` without creating one (`STORAGE_NOT_FOUND` when there is none).
 * When another process holds it, connects to that process's control socket instead and
 * reads through it (`CONTROL_UNAVAILABLE` when nothing answers there).
 */
export async function openForReading(db: string): Promise<ReadDatabase> {
  let storage: Storage;
  let control: ControlClient | undefined;
  // A shared database admits every process: nothing to go through.
  if (isDatabaseUrl(db)) {
    storage = await openStorage(db, { create: false });
    return { storage, control: undefined, [Symbol.asyncDispose]: () => storage.close() };
  }
  try {
    storage = await openStorage(db, { create: false });
  } catch (error) {
    if (!isLockedError(error)) throw error;
    control = await connectControl(db);
    storage = createRemoteStorage(control, db);
  }
  return { storage, control, [Symbol.asyncDispose]: () => storage.close() };
}
