import type { Storage, StorageOp, WriteOptions } from '../../core/storage.js';

/**
 * `inner` with its writes passed through `write` (which calls `next` to write, or not):
 * the one way tests count, record or fail the writes of a real storage.
 */
export function wrapStorage(inner: Storage, write: (ops: readonly StorageOp[], options: WriteOptions | undefined, next: () => Promise<void>) => Promise<void>): Storage {
  return {
    get location() {
      return inner.location;
    },
    get status() {
      return inner.status;
    },
    get: (key) => inner.get(key),
    entries: (range) => inner.entries(range),
    claim: (runId, owner) => inner.claim(runId, owner),
    release: (claim) => inner.release(claim),
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
    write: (ops, options) => write(ops, options, () => inner.write(ops, options)),
  };
}
