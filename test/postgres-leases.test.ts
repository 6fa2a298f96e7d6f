import { describe, expect, it } from 'vitest';
import { manualClock } from '../core/clock.js';
import { createWriteQueue } from '../core/write-queue.js';
import { put } from '../core/run-store.js';
import { layout } from '../core/layout.js';
import type { RunClaim, Storage } from '../core/storage.js';
import { postgresStorage } from '../storage/postgres/index.js';
import { failure } from './helpers/failure.js';
import { useTestDatabase } from './helpers/postgres.js';
import { useCleanups } from './helpers/cleanups.js';

/**
 * Leases on one Postgres database shared by two storage objects, each with its own pool:
 * two nodes as far as the database can tell.
 */

const db = useTestDatabase();

const fx = useCleanups();
const bytes = (text: string) => new TextEncoder().encode(text);
const text = (value: Uint8Array | undefined) => (value ? new TextDecoder().decode(value) : undefined);

/** A "node": its own pool on the shared database. */
const node = async (options: Partial<Parameters<typeof postgresStorage>[0]> = {}): Promise<Storage> => {
  const storage = await postgresStorage({ connectionString: db.url, ...options } as Parameters<typeof postgresStorage>[0]);
  fx.defer(() => storage.close());
  return storage;
};

const sql = db.sql;

/** Tries `claim` until the database says the lease is gone (it expires on the database's clock). */
const claimOnceExpired = async (storage: Storage, runId: string, owner: string): Promise<RunClaim> => {
  for (;;) {
    const attempt = await storage.claim(runId, owner).catch((error: unknown) => error);
    if (!(attempt instanceof Error)) return attempt as RunClaim;
    expect((attempt as { code?: string }).code).toBe('RUN_CLAIMED');
    const [row] = await sql<{ left: number }>(`SELECT greatest(0, extract(epoch FROM expires_at - clock_timestamp()) * 1000)::int AS left FROM troupe_claims WHERE run_id = $1`, [runId]);
    await new Promise((resolve) => setTimeout(resolve, Math.min(50, (row?.left ?? 0) + 5)));
  }
};

/** A record a node would write for a run nobody executes yet. */
const submitted = (id: string, startedAt: number) =>
  put(layout.run(id), { id, crew: 'pair', version: '1', status: 'running', input: 'x', startedAt, updatedAt: startedAt, checkpoint: 0, resumes: 0 });

describe('leases on a shared Postgres database', () => {
  it('gives a run to one of two racing nodes, and a held run to another node once the first lets its lease expire, one epoch higher', async () => {
    // The first node's heartbeat runs on a clock nobody advances: it stops renewing, like a frozen process.
    const frozen = manualClock(0);
    const a = await node({ leaseMs: 300, clock: frozen });
    const b = await node({ leaseMs: 300 });
    const race = await Promise.allSettled([a.claim('raced', 'a.1'), b.claim('raced', 'b.1')]);
    expect(race.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(race.filter((r) => r.status === 'rejected').map((r) => ((r as PromiseRejectedResult).reason as { code: string }).code)).toEqual(['RUN_CLAIMED']);

    const first = await a.claim('contended', 'a.1');
    expect(first).toEqual({ runId: 'contended', owner: 'a.1', epoch: 1 });
    const refused = await failure(b.claim('contended', 'b.1'));
    expect(refused.code).toBe('RUN_CLAIMED');
    expect(refused.details).toMatchObject({ holder: 'a.1', epoch: 1 });

    const second = await claimOnceExpired(b, 'contended', 'b.1');
    expect(second).toEqual({ runId: 'contended', owner: 'b.1', epoch: 2 });
    // The stale owner writes nothing: its fenced batch is refused inside the transaction.
    const stale = await failure(a.write([{ type: 'put', key: 'contended:state', value: bytes('stale') }], { fence: [first] }));
    expect(stale.code).toBe('LEASE_LOST');
    expect(stale.details.lost).toEqual([first]);
    expect(stale.message).toMatch(/owner "b\.1" holds it at epoch 2/);
    expect(await b.get('contended:state')).toBeUndefined();
    await b.write([{ type: 'put', key: 'contended:state', value: bytes('current') }], { fence: [second] });
    expect(text(await a.get('contended:state'))).toBe('current');

    // Its next heartbeat finds the lease gone and says so.
    const reported: RunClaim[][] = [];
    a.shared!.onLeaseLost((claims) => reported.push([...claims]));
    frozen.advance(100);
    await expect.poll(() => reported).toEqual([[first]]);
  });

  it('keeps a lease alive past its length while the heartbeat renews it', async () => {
    const a = await node({ leaseMs: 300, heartbeatMs: 50 });
    const b = await node({ leaseMs: 300 });
    await a.claim('renewed', 'a.1');
    const granted = (await sql<{ until: Date }>(`SELECT expires_at AS until FROM troupe_claims WHERE run_id = 'renewed'`))[0]!.until;
    // Renewed until past the first expiry: by then the lease would have run out unrenewed.
    await expect
      .poll(async () => (await sql<{ beyond: boolean }>(`SELECT clock_timestamp() > $1::timestamptz + interval '50 ms' AS beyond FROM troupe_claims WHERE run_id = 'renewed'`, [granted]))[0]!.beyond, {
        timeout: 5_000,
        interval: 50,
      })
      .toBe(true);
    expect((await failure(b.claim('renewed', 'b.1'))).details).toMatchObject({ holder: 'a.1', epoch: 1 });
  });

  it('lets nodes take free runs with SKIP LOCKED: each run once, up to the limit, oldest first, only of crews they know', async () => {
    const a = await node();
    const b = await node();
    const ops = Array.from({ length: 6 }, (_, i) => submitted(`free-${i}`, 1_000 + i));
    ops.push(put(layout.run('other-crew'), { id: 'other-crew', crew: 'unknown', version: '1', status: 'running', input: 'x', startedAt: 1, updatedAt: 1, checkpoint: 0, resumes: 0 }));
    ops.push(put(layout.run('finished'), { id: 'finished', crew: 'pair', version: '1', status: 'completed', input: 'x', startedAt: 1, updatedAt: 1, checkpoint: 3, resumes: 0 }));
    await a.write(ops);
    const [mine, theirs] = await Promise.all([a.shared!.claimable('a.1', ['pair'], 4), b.shared!.claimable('b.1', ['pair'], 4)]);
    const all = [...mine, ...theirs].map((c) => c.runId).sort();
    expect(all).toEqual(['free-0', 'free-1', 'free-2', 'free-3', 'free-4', 'free-5']);
    expect(mine.length).toBeLessThanOrEqual(4);
    expect(theirs.length).toBeLessThanOrEqual(4);
    for (const claim of [...mine, ...theirs]) expect(claim.epoch).toBe(1);
    expect(await a.shared!.claimable('a.1', ['pair'], 4)).toEqual([]);
    // A released run is free again, at the next epoch.
    const first = mine[0] ?? theirs[0]!;
    await (mine.includes(first) ? a : b).release(first);
    expect(await b.shared!.claimable('b.2', ['pair'], 10)).toEqual([{ runId: first.runId, owner: 'b.2', epoch: 2 }]);
  });

  it('wakes other nodes when a run is submitted or a lease released (LISTEN/NOTIFY)', async () => {
    const a = await node();
    const b = await node();
    let wakes = 0;
    b.shared!.onRunsAvailable(() => (wakes += 1));
    // The LISTEN is in place once a notification sent after it arrives.
    await expect
      .poll(async () => {
        await a.write([submitted(`wake-${wakes}`, 5)]);
        return wakes;
      })
      .toBeGreaterThan(0);
    const seen = wakes;
    const claim = (await b.shared!.claimable('b.1', ['pair'], 1))[0]!;
    await b.release(claim);
    await expect.poll(() => wakes).toBeGreaterThan(seen);
  });

  it('group commit: a merged batch with one lost claim writes the other runs and fails only that one', async () => {
    const a = await node();
    const b = await node();
    const kept = await a.claim('kept', 'a.1');
    const taken = await a.claim('taken', 'a.1');
    // Taken over behind a's back (as an expired lease would be).
    await sql(`UPDATE troupe_claims SET expires_at = clock_timestamp() - interval '1 s' WHERE run_id = 'taken'`);
    await b.claim('taken', 'b.1');
    const queue = createWriteQueue(a, { sync: false });
    const results = await Promise.allSettled([
      queue.write([{ type: 'put', key: 'kept:1', value: bytes('1') }], kept),
      queue.write([{ type: 'put', key: 'taken:1', value: bytes('1') }], taken),
      queue.write([{ type: 'put', key: 'kept:2', value: bytes('2') }], kept),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(((results[1] as PromiseRejectedResult).reason as { code: string }).code).toBe('LEASE_LOST');
    expect(text(await a.get('kept:1'))).toBe('1');
    expect(text(await a.get('kept:2'))).toBe('2');
    expect(await a.get('taken:1')).toBeUndefined();
  });

  it('waits for a write in flight before another node takes its run: the stale write cannot land after the taking', async () => {
    const a = await node();
    const b = await node();
    const claim = await a.claim('inflight', 'a.1');
    await sql(`UPDATE troupe_claims SET expires_at = clock_timestamp() - interval '1 s' WHERE run_id = 'inflight'`);
    // Both at once: either the write commits first (and the taking comes after it), or the
    // taking does (and the write is refused). Never a write of epoch 1 after epoch 2 exists.
    const [write, take] = await Promise.allSettled([a.write([{ type: 'put', key: 'inflight:x', value: bytes('a') }], { fence: [claim] }), b.claim('inflight', 'b.1')]);
    expect(take.status).toBe('fulfilled');
    if (write.status === 'rejected') {
      expect((write.reason as { code: string }).code).toBe('LEASE_LOST');
      expect(await b.get('inflight:x')).toBeUndefined();
    } else expect(text(await b.get('inflight:x'))).toBe('a');
    expect((await failure(a.write([{ type: 'put', key: 'inflight:y', value: bytes('a') }], { fence: [claim] }))).code).toBe('LEASE_LOST');
  });
});
