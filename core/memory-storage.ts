import { createLocalClaims } from './claims.js';
import { ErrorCode, TroupeError } from './errors.js';
import { assertOps, type KeyRange, type Status, type Storage, type StorageOp, type WriteOptions } from './storage.js';

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
  const pending = new Set<Promise<void>>();

  const ensureOpen = () => {
    if (status !== 'open') throw new TroupeError(ErrorCode.STORAGE_CLOSED, 'memory storage is closed');
  };
  const apply = (ops: readonly StorageOp[]) => {
    // Validated first, applied after: a bad op must not leave the ops before it applied.
    assertOps(ops);
    for (const op of ops) {
      if (op.type === 'put') data.set(op.key, op.value.slice());
      else data.delete(op.key);
    }
  };
  const claims = createLocalClaims({
    location: 'memory',
    get: async (key) => {
      ensureOpen();
      return data.get(key)?.slice();
    },
    put: async (key, value) => {
      ensureOpen();
      apply([{ type: 'put', key, value }]);
    },
  });

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
    async write(ops: readonly StorageOp[], options: WriteOptions = {}) {
      ensureOpen();
      const done = claims.fenced(options.fence, async () => apply(ops));
      pending.add(done);
      try {
        return await done;
      } finally {
        pending.delete(done);
      }
    },
    async claim(runId, owner) {
      ensureOpen();
      return claims.claim(runId, owner);
    },
    async release(claim) {
      if (status === 'open') claims.release(claim);
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
      claims.clear();
      // The promise of the interface: a write started before close has settled when it resolves.
      await Promise.allSettled([...pending]);
    },
    [Symbol.asyncDispose]() {
      return storage.close();
    },
  };
  return storage;
}
