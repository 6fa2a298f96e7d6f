/**
 * A read-only {@link Storage} whose reads are answered by the node holding the database,
 * over its control socket: the read commands (`runs`, `approvals`, `history`, `audit`,
 * `inspect`) run their usual code on it and print what they print on the database itself.
 * @module
 */
import { ErrorCode, TroupeError } from '../core/errors.js';
import type { KeyRange, RunClaim, Status, Storage, StorageOp } from '../core/storage.js';
import type { ControlClient } from './control-client.js';
import { EntriesResultSchema, GetResultSchema, MAX_PAGE_ENTRIES } from './control-protocol.js';

const bytes = (base64: string) => new Uint8Array(Buffer.from(base64, 'base64'));

/**
 * Reads through `client`; writes and claims fail (a second writer is what LevelDB's lock
 * prevents). Closing it closes the client. `location` is the database path, for messages.
 */
export function createRemoteStorage(client: ControlClient, location: string): Storage {
  let status: Status = 'open';
  const readOnly = (what: string) =>
    new TroupeError(ErrorCode.STORAGE_FAILED, `cannot ${what}: the database at ${location} is held by process ${client.peer.pid}, and is read-only through its control socket`, {
      details: { path: location, pid: client.peer.pid },
    });
  const ensureOpen = () => {
    if (status !== 'open') throw new TroupeError(ErrorCode.STORAGE_CLOSED, `storage at ${location} is ${status}`);
  };

  const storage: Storage = {
    location,
    get status() {
      return status;
    },
    async get(key) {
      ensureOpen();
      const { value } = GetResultSchema.parse(await client.call({ method: 'get', key }));
      return value === null ? undefined : bytes(value);
    },
    write(_ops: readonly StorageOp[]) {
      return Promise.reject(readOnly('write'));
    },
    async *entries(range: KeyRange) {
      ensureOpen();
      let remaining = range.limit ?? Infinity;
      let gte = range.gte;
      let lt = range.lt;
      // Paged: each page resumes just past the last key of the one before.
      while (remaining > 0) {
        const limit = Math.min(remaining, MAX_PAGE_ENTRIES);
        const page = EntriesResultSchema.parse(
          await client.call({
            method: 'entries',
            range: { ...(gte !== undefined ? { gte } : {}), ...(lt !== undefined ? { lt } : {}), ...(range.reverse ? { reverse: true } : {}), limit },
          }),
        );
        for (const [key, value] of page.entries) yield [key, bytes(value)] as [string, Uint8Array];
        remaining -= page.entries.length;
        const last = page.entries.at(-1)?.[0];
        if (last === undefined || (!page.more && page.entries.length < limit)) return;
        // The smallest key after `last` is `last` + NUL.
        if (range.reverse) lt = last;
        else gte = `${last}\u0000`;
      }
    },
    claim(_runId: string, _owner: string): Promise<RunClaim> {
      return Promise.reject(readOnly('claim a run'));
    },
    async release() {},
    close() {
      status = 'closed';
      return client.close();
    },
    [Symbol.asyncDispose]() {
      return storage.close();
    },
  };
  return storage;
}
