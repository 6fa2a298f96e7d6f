import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { prefixRange, type Storage, type StorageOp } from '../core/storage.js';
import { isTroupeError } from '../core/errors.js';
import { failure } from './helpers/failure.js';

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

    it('applies all ops of a batch or none: a bad op leaves the ops before it unapplied', async () => {
      await storage.write([{ type: 'put', key: 'kept', value: bytes('old') }]);
      const bad = [
        { type: 'put', key: 'kept', value: bytes('new') },
        { type: 'del', key: 'other' },
        { type: 'put', key: 'broken', value: 'not bytes' as unknown as Uint8Array },
      ] as StorageOp[];
      await expect(storage.write(bad)).rejects.toThrow(TypeError);
      expect(text(await storage.get('kept'))).toBe('old');
      expect(await storage.get('broken')).toBeUndefined();
    });

    it('close waits for pending writes: a write started before close is complete (and durable) when close resolves', async () => {
      const order: string[] = [];
      const ops = Array.from({ length: 500 }, (_, i) => ({ type: 'put' as const, key: `pending:${String(i).padStart(4, '0')}`, value: bytes('x'.repeat(1000)) }));
      const written = storage.write(ops).then(() => order.push('write'));
      const closed = storage.close().then(() => order.push('close'));
      await Promise.all([written, closed]);
      expect(order).toEqual(['write', 'close']);
      if (!reopen) return;
      storage = await reopen();
      expect(await keysOf(storage, prefixRange('pending:'))).toHaveLength(500);
    });

    it('grants one live claim per run, epochs growing with every claim', async () => {
      const first = await storage.claim('run-1', 'node-a.1');
      expect(first).toEqual({ runId: 'run-1', owner: 'node-a.1', epoch: 1 });
      const taken = await failure(storage.claim('run-1', 'node-b.1'));
      expect(taken.code).toBe('RUN_CLAIMED');
      expect(taken.message).toMatch(/run "run-1" is being executed by owner "node-a\.1" \(epoch 1\)/);
      expect(taken.details).toMatchObject({ runId: 'run-1', holder: 'node-a.1', epoch: 1 });
      // Not reentrant: the same owner cannot hold two claims of one run either.
      expect((await failure(storage.claim('run-1', 'node-a.1'))).code).toBe('RUN_CLAIMED');
      // Other runs are independent.
      expect(await storage.claim('run-2', 'node-b.1')).toMatchObject({ runId: 'run-2', epoch: 1 });
      await storage.release(first);
      const second = await storage.claim('run-1', 'node-b.1');
      expect(second).toEqual({ runId: 'run-1', owner: 'node-b.1', epoch: 2 });
      // Releasing a claim that is no longer current frees nothing.
      await storage.release(first);
      expect((await failure(storage.claim('run-1', 'node-c.1'))).details).toMatchObject({ holder: 'node-b.1', epoch: 2 });
      await expect(storage.claim('', 'x')).rejects.toThrow(TypeError);
      await expect(storage.claim('run-3', '')).rejects.toThrow(TypeError);
    });

    it('lets exactly one of two concurrent claims of a run win', async () => {
      const results = await Promise.allSettled([storage.claim('race', 'a'), storage.claim('race', 'b')]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const lost = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')!;
      expect(isTroupeError(lost.reason, 'RUN_CLAIMED')).toBe(true);
    });

    it('fences writes: a batch under a lost claim fails with LEASE_LOST, names every lost claim, and writes nothing', async () => {
      const stale = await storage.claim('run-1', 'node-a.1');
      const other = await storage.claim('run-2', 'node-a.1');
      await storage.write([{ type: 'put', key: 'run-1:a', value: bytes('1') }], { fence: [stale] });
      expect(text(await storage.get('run-1:a'))).toBe('1');
      await storage.release(stale);
      const current = await storage.claim('run-1', 'node-b.1');
      const lost = await failure(
        storage.write(
          [
            { type: 'put', key: 'run-1:a', value: bytes('2') },
            { type: 'put', key: 'run-2:a', value: bytes('2') },
          ],
          { fence: [stale, other] },
        ),
      );
      expect(lost.code).toBe('LEASE_LOST');
      expect(lost.details.lost).toEqual([{ runId: 'run-1', owner: 'node-a.1', epoch: 1 }]);
      expect(lost.message).toMatch(/run "run-1" \(owner "node-a\.1", epoch 1; owner "node-b\.1" holds it at epoch 2\)/);
      expect(text(await storage.get('run-1:a'))).toBe('1');
      expect(await storage.get('run-2:a')).toBeUndefined();
      // A released claim fences nothing any more either.
      await storage.release(current);
      expect((await failure(storage.write([{ type: 'put', key: 'run-1:b', value: bytes('3') }], { fence: [current] }))).code).toBe('LEASE_LOST');
      expect(await storage.get('run-1:b')).toBeUndefined();
    });

    it('keeps the epoch across reopen: a claim left by a closed (or dead) process is free, at a higher epoch', async (ctx) => {
      if (!reopen) return ctx.skip();
      await storage.claim('run-1', 'node-a.1');
      await storage.close();
      storage = await reopen();
      expect(await storage.claim('run-1', 'node-b.1')).toEqual({ runId: 'run-1', owner: 'node-b.1', epoch: 2 });
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
