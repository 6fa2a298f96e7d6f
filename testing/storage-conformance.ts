/**
 * The conformance suite every `Storage` must pass: ordered keys, atomic batches, claims with
 * growing epochs, fenced writes, close. Runner independent: see {@link TestRegistrar}.
 * @module
 */
import assert from 'node:assert/strict';
import { isTroupeError, type TroupeError } from '../core/errors.js';
import { prefixRange, type KeyRange, type Storage, type StorageOp } from '../core/storage.js';
import { assertFields, type TestRegistrar } from './suite.js';

/** A fresh, empty store for one case, and how to reopen it when it is durable. */
export interface StorageFixture {
  storage: Storage;
  /** Opens the same data again (after `storage` was closed); absent for a store that keeps nothing. */
  reopen?: () => Promise<Storage>;
  /** Removes what the fixture made (a directory, a database), after the case closed its storage. */
  cleanup: () => Promise<void>;
}

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (value: Uint8Array | undefined) => (value ? new TextDecoder().decode(value) : undefined);

async function keysOf(storage: Storage, range: KeyRange) {
  const out: string[] = [];
  for await (const [key] of storage.entries(range)) out.push(key);
  return out;
}

/** The `TroupeError` `promise` rejects with (fails when it resolves or rejects with anything else). */
async function troupeFailure(promise: Promise<unknown>): Promise<TroupeError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isTroupeError(error), `expected a TroupeError, got ${String(error)}`);
    return error;
  }
  assert.fail('expected a rejection');
}

/** Options of {@link storageConformance}. */
export interface StorageConformanceOptions {
  /**
   * The store keeps its data when closed (default true): the cases that close and reopen it
   * run, and every fixture must have `reopen`. False for a store that keeps nothing (memory).
   */
  durable?: boolean;
}

/**
 * Registers the behaviour every {@link Storage} must have. `open` makes a fresh, empty store
 * for each case (and says how to reopen it when it is durable).
 *
 * @example
 * import { afterEach, describe, it } from 'vitest';
 * import { storageConformance } from 'troupe/testing';
 * storageConformance({ describe, it, afterEach }, 'my storage', async () => ({ storage: await openMine(), cleanup: async () => {} }));
 */
export function storageConformance(t: TestRegistrar, name: string, open: () => Promise<StorageFixture>, options: StorageConformanceOptions = {}): void {
  const durable = options.durable ?? true;
  t.describe(`${name} storage conformance`, () => {
    let current: { storage: Storage; cleanup: () => Promise<void> } | undefined;
    t.afterEach(async () => {
      if (!current) return;
      const { storage, cleanup } = current;
      current = undefined;
      await storage.close();
      await cleanup();
    });
    /** A case on a fresh store; `reopen` replaces the store the case (and the cleanup) works with. */
    const test = (title: string, body: (s: { storage: () => Storage; reopen?: () => Promise<Storage> }) => Promise<void>) =>
      t.it(title, async () => {
        const fixture = await open();
        current = { storage: fixture.storage, cleanup: fixture.cleanup };
        const reopen = fixture.reopen;
        assert.ok(!durable || reopen, `${name}: a durable store's fixture needs reopen() (or pass { durable: false })`);
        await body({
          storage: () => current!.storage,
          ...(reopen
            ? {
                reopen: async () => {
                  current!.storage = await reopen();
                  return current!.storage;
                },
              }
            : {}),
        });
      });

    test('reads back what a batch wrote and misses absent keys', async ({ storage }) => {
      await storage().write([{ type: 'put', key: 'a', value: bytes('1') }, { type: 'put', key: 'b', value: bytes('2') }]);
      assert.equal(text(await storage().get('a')), '1');
      assert.equal(text(await storage().get('b')), '2');
      assert.equal(await storage().get('zzz'), undefined);
    });

    test('applies puts and deletes of one batch in order', async ({ storage }) => {
      await storage().write([{ type: 'put', key: 'k', value: bytes('old') }]);
      await storage().write([{ type: 'del', key: 'k' }, { type: 'put', key: 'k2', value: bytes('new') }]);
      assert.equal(await storage().get('k'), undefined);
      assert.equal(text(await storage().get('k2')), 'new');
    });

    test('iterates a prefix in byte order, forward, reverse and limited', async ({ storage }) => {
      const keys = ['ckpt:r:000000000002', 'ckpt:r:000000000010', 'ckpt:r:000000000001', 'ckpt:s:000000000001', 'ckpu'];
      await storage().write(keys.map((key) => ({ type: 'put' as const, key, value: bytes(key) })));
      assert.deepEqual(await keysOf(storage(), prefixRange('ckpt:r:')), ['ckpt:r:000000000001', 'ckpt:r:000000000002', 'ckpt:r:000000000010']);
      assert.deepEqual(await keysOf(storage(), prefixRange('ckpt:r:', { reverse: true, limit: 1 })), ['ckpt:r:000000000010']);
      assert.deepEqual(await keysOf(storage(), { gte: 'ckpt:r:000000000002', lt: 'ckpt:s' }), ['ckpt:r:000000000002', 'ckpt:r:000000000010']);
    });

    test('does not let callers mutate stored bytes', async ({ storage }) => {
      const value = bytes('abc');
      await storage().write([{ type: 'put', key: 'm', value }]);
      value[0] = 0;
      const read = (await storage().get('m'))!;
      read[1] = 0;
      assert.equal(text(await storage().get('m')), 'abc');
    });

    test('closes idempotently and refuses use after close with STORAGE_CLOSED', async ({ storage }) => {
      await storage().close();
      await storage().close();
      assert.equal(storage().status, 'closed');
      assert.equal((await troupeFailure(storage().get('a'))).code, 'STORAGE_CLOSED');
      assert.equal((await troupeFailure(storage().write([{ type: 'put', key: 'a', value: bytes('1') }]))).code, 'STORAGE_CLOSED');
    });

    test('applies all ops of a batch or none: a bad op leaves the ops before it unapplied', async ({ storage }) => {
      await storage().write([{ type: 'put', key: 'kept', value: bytes('old') }]);
      const bad = [
        { type: 'put', key: 'kept', value: bytes('new') },
        { type: 'del', key: 'other' },
        { type: 'put', key: 'broken', value: 'not bytes' as unknown as Uint8Array },
      ] as StorageOp[];
      await assert.rejects(storage().write(bad), TypeError);
      assert.equal(text(await storage().get('kept')), 'old');
      assert.equal(await storage().get('broken'), undefined);
    });

    test('close waits for pending writes: a write started before close is complete (and durable) when close resolves', async ({ storage, reopen }) => {
      const order: string[] = [];
      const ops = Array.from({ length: 500 }, (_, i) => ({ type: 'put' as const, key: `pending:${String(i).padStart(4, '0')}`, value: bytes('x'.repeat(1000)) }));
      const written = storage().write(ops).then(() => order.push('write'));
      const closed = storage().close().then(() => order.push('close'));
      await Promise.all([written, closed]);
      assert.deepEqual(order, ['write', 'close']);
      if (!reopen) return;
      assert.equal((await keysOf(await reopen(), prefixRange('pending:'))).length, 500);
    });

    test('grants one live claim per run, epochs growing with every claim', async ({ storage }) => {
      const first = await storage().claim('run-1', 'node-a.1');
      assert.deepEqual(first, { runId: 'run-1', owner: 'node-a.1', epoch: 1 });
      const taken = await troupeFailure(storage().claim('run-1', 'node-b.1'));
      assert.equal(taken.code, 'RUN_CLAIMED');
      assert.match(taken.message, /run "run-1" is being executed by owner "node-a\.1" \(epoch 1\)/);
      assertFields(taken.details, { runId: 'run-1', holder: 'node-a.1', epoch: 1 }, 'RUN_CLAIMED details');
      // Not reentrant: the same owner cannot hold two claims of one run either.
      assert.equal((await troupeFailure(storage().claim('run-1', 'node-a.1'))).code, 'RUN_CLAIMED');
      // Other runs are independent.
      assertFields(await storage().claim('run-2', 'node-b.1'), { runId: 'run-2', epoch: 1 }, 'claim of another run');
      await storage().release(first);
      assert.deepEqual(await storage().claim('run-1', 'node-b.1'), { runId: 'run-1', owner: 'node-b.1', epoch: 2 });
      // Releasing a claim that is no longer current frees nothing.
      await storage().release(first);
      assertFields((await troupeFailure(storage().claim('run-1', 'node-c.1'))).details, { holder: 'node-b.1', epoch: 2 }, 'holder after a stale release');
      await assert.rejects(storage().claim('', 'x'), TypeError);
      await assert.rejects(storage().claim('run-3', ''), TypeError);
    });

    test('lets exactly one of two concurrent claims of a run win', async ({ storage }) => {
      const results = await Promise.allSettled([storage().claim('race', 'a'), storage().claim('race', 'b')]);
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
      const lost = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')!;
      assert.ok(isTroupeError(lost.reason, 'RUN_CLAIMED'), `the losing claim fails with RUN_CLAIMED, got ${String(lost.reason)}`);
    });

    test('fences writes: a batch under a lost claim fails with LEASE_LOST, names every lost claim, and writes nothing', async ({ storage }) => {
      const stale = await storage().claim('run-1', 'node-a.1');
      const other = await storage().claim('run-2', 'node-a.1');
      await storage().write([{ type: 'put', key: 'run-1:a', value: bytes('1') }], { fence: [stale] });
      assert.equal(text(await storage().get('run-1:a')), '1');
      await storage().release(stale);
      const current = await storage().claim('run-1', 'node-b.1');
      const batch: StorageOp[] = [
        { type: 'put', key: 'run-1:a', value: bytes('2') },
        { type: 'put', key: 'run-2:a', value: bytes('2') },
      ];
      const lost = await troupeFailure(storage().write(batch, { fence: [stale, other] }));
      assert.equal(lost.code, 'LEASE_LOST');
      assert.deepEqual(lost.details.lost, [{ runId: 'run-1', owner: 'node-a.1', epoch: 1 }]);
      assert.match(lost.message, /run "run-1" \(owner "node-a\.1", epoch 1; owner "node-b\.1" holds it at epoch 2\)/);
      assert.equal(text(await storage().get('run-1:a')), '1');
      assert.equal(await storage().get('run-2:a'), undefined);
      // A released claim fences nothing any more either.
      await storage().release(current);
      assert.equal((await troupeFailure(storage().write([{ type: 'put', key: 'run-1:b', value: bytes('3') }], { fence: [current] }))).code, 'LEASE_LOST');
      assert.equal(await storage().get('run-1:b'), undefined);
    });

    // Only a store that keeps its data can show these.
    if (!durable) return;

    test('keeps the epoch across reopen: a claim left by a closed (or dead) process is free, at a higher epoch', async ({ storage, reopen }) => {
      await storage().claim('run-1', 'node-a.1');
      await storage().close();
      assert.deepEqual(await (await reopen!()).claim('run-1', 'node-b.1'), { runId: 'run-1', owner: 'node-b.1', epoch: 2 });
    });

    test('compact (where a store has it) keeps every live key and value, in a range or the whole store, and refuses use after close', async ({ storage }) => {
      const compact = storage().compact?.bind(storage());
      if (!compact) return;
      const keys = Array.from({ length: 50 }, (_, i) => `actor:r:${String(i).padStart(12, '0')}`);
      await storage().write([...keys.map((key) => ({ type: 'put' as const, key, value: bytes(key) })), { type: 'put', key: 'other', value: bytes('o') }]);
      await storage().write(keys.filter((_, i) => i % 2 === 0).map((key) => ({ type: 'del' as const, key })));
      await compact(prefixRange('actor:r:'));
      await compact();
      const kept = keys.filter((_, i) => i % 2 === 1);
      assert.deepEqual(await keysOf(storage(), prefixRange('actor:r:')), kept);
      for (const key of kept) assert.equal(text(await storage().get(key)), key);
      assert.equal(text(await storage().get('other')), 'o');
      await storage().close();
      assert.equal((await troupeFailure(compact())).code, 'STORAGE_CLOSED');
    });

    test('keeps data across close and reopen when durable', async ({ storage, reopen }) => {
      await storage().write([{ type: 'put', key: 'durable', value: bytes('yes') }], { sync: true });
      await storage().close();
      assert.equal(text(await (await reopen!()).get('durable')), 'yes');
    });
  });
}
