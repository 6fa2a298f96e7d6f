import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { prefixRange, type Storage } from '../core/storage.js';
import { isTroupeError } from '../core/errors.js';

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (value: Uint8Array | undefined) => (value ? new TextDecoder().decode(value) : undefined);

async function keysOf(storage: Storage, range: Parameters<Storage['entries']>[0]) {
  const out: string[] = [];
  for await (const [key] of storage.entries(range)) out.push(key);
  return out;
}

/**
 * The behaviour every {@link Storage} must have. Each implementation calls this with a
 * factory that opens a fresh, empty store (and a reopen function when it is durable).
 */
export function storageConformance(name: string, open: () => Promise<{ storage: Storage; reopen?: () => Promise<Storage>; cleanup: () => Promise<void> }>) {
  describe(`${name} storage conformance`, () => {
    let storage: Storage;
    let reopen: (() => Promise<Storage>) | undefined;
    let cleanup: () => Promise<void>;

    beforeEach(async () => {
      ({ storage, reopen, cleanup } = await open());
    });
    afterEach(async () => {
      await storage.close();
      await cleanup();
    });

    it('reads back what a batch wrote and misses absent keys', async () => {
      await storage.write([{ type: 'put', key: 'a', value: bytes('1') }, { type: 'put', key: 'b', value: bytes('2') }]);
      expect(text(await storage.get('a'))).toBe('1');
      expect(text(await storage.get('b'))).toBe('2');
      expect(await storage.get('zzz')).toBeUndefined();
    });

    it('applies puts and deletes of one batch in order', async () => {
      await storage.write([{ type: 'put', key: 'k', value: bytes('old') }]);
      await storage.write([{ type: 'del', key: 'k' }, { type: 'put', key: 'k2', value: bytes('new') }]);
      expect(await storage.get('k')).toBeUndefined();
      expect(text(await storage.get('k2'))).toBe('new');
    });

    it('iterates a prefix in byte order, forward, reverse and limited', async () => {
      const keys = ['ckpt:r:000000000002', 'ckpt:r:000000000010', 'ckpt:r:000000000001', 'ckpt:s:000000000001', 'ckpu'];
      await storage.write(keys.map((key) => ({ type: 'put' as const, key, value: bytes(key) })));
      expect(await keysOf(storage, prefixRange('ckpt:r:'))).toEqual(['ckpt:r:000000000001', 'ckpt:r:000000000002', 'ckpt:r:000000000010']);
      expect(await keysOf(storage, prefixRange('ckpt:r:', { reverse: true, limit: 1 }))).toEqual(['ckpt:r:000000000010']);
      expect(await keysOf(storage, { gte: 'ckpt:r:000000000002', lt: 'ckpt:s' })).toEqual(['ckpt:r:000000000002', 'ckpt:r:000000000010']);
    });

    it('does not let callers mutate stored bytes', async () => {
      const value = bytes('abc');
      await storage.write([{ type: 'put', key: 'm', value }]);
      value[0] = 0;
      const read = (await storage.get('m'))!;
      read[1] = 0;
      expect(text(await storage.get('m'))).toBe('abc');
    });

    it('closes idempotently and refuses use after close with STORAGE_CLOSED', async () => {
      await storage.close();
      await storage.close();
      expect(storage.status).toBe('closed');
      await expect(storage.get('a')).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'STORAGE_CLOSED'));
      await expect(storage.write([{ type: 'put', key: 'a', value: bytes('1') }])).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'STORAGE_CLOSED'));
    });

    it('keeps data across close and reopen when durable', async (ctx) => {
      if (!reopen) return ctx.skip();
      await storage.write([{ type: 'put', key: 'durable', value: bytes('yes') }], { sync: true });
      await storage.close();
      storage = await reopen();
      expect(text(await storage.get('durable'))).toBe('yes');
    });
  });
}
