import { ErrorCode, TroupeError } from '../core/errors.js';
import type { KeyRange, Status, Storage, StorageOp } from '../core/storage.js';

const encoder = new TextEncoder();

/** Byte-wise comparison, the order LevelDB uses, so both implementations agree. */
function compareKeys(a: string, b: string): number {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}

/**
 * An in-memory {@link Storage} for tests and ephemeral nodes. Values are copied on the way
 * in and out so callers cannot mutate stored bytes.
 */
export function memoryStorage(): Storage {
  const data = new Map<string, Uint8Array>();
  let status: Status = 'open';

  const ensureOpen = () => {
    if (status !== 'open') throw new TroupeError(ErrorCode.STORAGE_CLOSED, 'memory storage is closed');
  };

  const storage: Storage = {
    location: 'memory',
    get status() {
      return status;
    },
    async get(key) {
      ensureOpen();
      const value = data.get(key);
      return value && value.slice();
    },
    async write(ops: readonly StorageOp[]) {
      ensureOpen();
      for (const op of ops) {
        if (op.type === 'put') data.set(op.key, op.value.slice());
        else data.delete(op.key);
      }
    },
    async *entries(range: KeyRange) {
      ensureOpen();
      const keys = [...data.keys()]
        .filter((k) => (range.gte === undefined || compareKeys(k, range.gte) >= 0) && (range.lt === undefined || compareKeys(k, range.lt) < 0))
        .sort(compareKeys);
      if (range.reverse) keys.reverse();
      const limited = range.limit !== undefined && range.limit >= 0 ? keys.slice(0, range.limit) : keys;
      for (const key of limited) {
        const value = data.get(key);
        if (value) yield [key, value.slice()] as [string, Uint8Array];
      }
    },
    async close() {
      status = 'closed';
    },
    [Symbol.asyncDispose]() {
      return storage.close();
    },
  };
  return storage;
}
