import pg from 'pg';
import type { Pool, PoolClient } from 'pg';
import { assertClaim, leaseLostError } from '../../core/claims.js';
import { backgroundTimer, systemClock, type Clock } from '../../core/clock.js';
import { ErrorCode, isTroupeError, TroupeError } from '../../core/errors.js';
import { assertOps, type KeyRange, type RunClaim, type SharedRuns, type Status, type Storage, type StorageOp, type WriteOptions } from '../../core/storage.js';
import { createLeases } from './leases.js';
import { MAIL_CHANNEL, projectionOf, RUNS_CHANNEL, writeProjection } from './projection.js';
import { migrate } from './schema.js';

export { SCHEMA_VERSION } from './schema.js';

/**
 * Options of {@link postgresStorage}: where the database is (a connection string, or a
 * `pg.Pool` the caller owns), and the lease timings of the runs this storage claims.
 */
export type PostgresStorageOptions = ({ connectionString: string; pool?: never } | { pool: Pool; connectionString?: never }) & {
  /**
   * How long a claim's lease lasts without renewal, in ms. A node that stops (killed,
   * frozen, cut off) keeps its runs this long at most before others take them. Default 15 000.
   */
  leaseMs?: number;
  /** How often held leases are renewed, in ms. Default a third of `leaseMs`. */
  heartbeatMs?: number;
  /** Connections of the pool this storage opens (not of a pool passed in). Default 10. */
  maxConnections?: number;
  /** Default for {@link WriteOptions.sync}. Default `false`: see {@link postgresStorage}. */
  sync?: boolean;
  /**
   * Create (or migrate) Troupe's tables when the database has none (or older ones).
   * Default `true`; with `false` (read commands) a database without them fails with
   * `STORAGE_NOT_FOUND` and nothing is created.
   */
  create?: boolean;
  /** Clock of the heartbeat (tests inject one). Lease expiry itself is the database's clock. */
  clock?: Clock;
};

interface ResolvedOptions {
  leaseMs: number;
  heartbeatMs: number;
  maxConnections: number;
  sync: boolean;
  create: boolean;
  clock: Clock;
}

function resolve(options: PostgresStorageOptions): ResolvedOptions {
  const leaseMs = options.leaseMs ?? 15_000;
  const heartbeatMs = options.heartbeatMs ?? Math.max(1, Math.floor(leaseMs / 3));
  const maxConnections = options.maxConnections ?? 10;
  if (!Number.isInteger(leaseMs) || leaseMs < 100) throw new TypeError(`leaseMs must be an integer of at least 100 ms, got ${String(options.leaseMs)}`);
  if (!Number.isInteger(heartbeatMs) || heartbeatMs < 1 || heartbeatMs >= leaseMs) {
    throw new TypeError(`heartbeatMs must be a positive integer below leaseMs (${leaseMs}), got ${String(options.heartbeatMs)}: a lease must be renewed before it expires`);
  }
  if (!Number.isInteger(maxConnections) || maxConnections < 2) throw new TypeError(`maxConnections must be an integer of at least 2, got ${String(options.maxConnections)}`);
  return { leaseMs, heartbeatMs, maxConnections, sync: options.sync ?? false, create: options.create ?? true, clock: options.clock ?? systemClock };
}

/** The connection string without its password, for messages. */
export function describeConnection(connectionString: string): string {
  try {
    const url = new URL(connectionString);
    if (url.password) url.password = '***';
    return url.toString();
  } catch {
    return 'postgres (unparsable connection string)';
  }
}

// Postgres text holds neither U+0000 nor a lone surrogate: such a key would be changed or refused.
const BAD_KEY = /\u0000|\p{Cs}/u;

/** SQLSTATEs after which the whole transaction may simply be tried again (nothing was applied). */
const RETRY_STATES = new Set(['40001', '40P01']);

/** How soon a node listens again after its LISTEN connection was lost. */
const RELISTEN_MS = 1_000;

const failed = (location: string, what: string, error: unknown) =>
  isTroupeError(error) || error instanceof TypeError
    ? error
    : new TroupeError(ErrorCode.STORAGE_FAILED, `postgres at ${location}: ${what} failed: ${(error as Error)?.message ?? String(error)}`, {
        cause: error,
        details: { location, ...(typeof (error as { code?: unknown })?.code === 'string' ? { sqlState: (error as { code: string }).code } : {}) },
      });

/**
 * A {@link Storage} on PostgreSQL (the `pg` driver), for many nodes sharing one database.
 *
 * - Keys and values live in `troupe_kv` (`key text COLLATE "C"`: byte order on a UTF8
 *   database, which is checked on open); one `write()` is one transaction.
 * - Claims are leases ({@link SharedRuns}): `leaseMs` long, renewed every `heartbeatMs` by
 *   this object, takeable once released or expired, each taking one epoch higher. A fenced
 *   write checks its claims inside its transaction, holding their rows locked until commit,
 *   so a run cannot be taken between the check and the write.
 * - Run records and approvals are projected into `troupe_runs` and `troupe_approvals` (and
 *   the view `troupe_run_leases`) in the same transaction, for plain SQL.
 * - `sync: false` commits with `synchronous_commit = off`: the server has the write (it
 *   survives the node being killed) but may lose the last few commits if the server itself
 *   crashes. `sync: true` waits for the server's WAL flush.
 * - The schema is versioned (`troupe_schema`) and migrated on open; a newer schema than this
 *   code knows is refused with `STORAGE_VERSION`.
 *
 * `close()` releases the claims this object holds and ends the pool it opened; a pool passed
 * in is the caller's and stays open.
 *
 * @example
 * ```ts
 * import { postgresStorage } from 'troupe/storage/postgres';
 * await using storage = await postgresStorage({ connectionString: 'postgres://troupe@db.internal/troupe', leaseMs: 10_000 });
 * await using node = await createNode({ storage, crews: [research] });
 * ```
 */
export async function postgresStorage(options: PostgresStorageOptions): Promise<Storage> {
  const hasString = typeof options?.connectionString === 'string' && options.connectionString.length > 0;
  const hasPool = options?.pool !== undefined && options.pool !== null;
  if (hasString === hasPool) throw new TypeError('postgresStorage() takes one of { connectionString } or { pool }');
  const o = resolve(options);
  const owned = hasString;
  const pool: Pool = hasString ? new pg.Pool({ connectionString: options.connectionString!, max: o.maxConnections }) : options.pool!;
  const location = hasString ? describeConnection(options.connectionString!) : `postgres pool (${pool.options.database ?? 'default database'})`;
  // An idle connection the server dropped must not crash the process; the next query reconnects.
  const onIdleError = () => {};
  if (owned) pool.on('error', onIdleError);

  let status: Status = 'opening';
  try {
    const client = await pool.connect();
    try {
      const { rows } = await client.query<{ server_encoding: string }>('SHOW server_encoding');
      if (rows[0]?.server_encoding !== 'UTF8') {
        throw new TroupeError(ErrorCode.STORAGE_FAILED, `postgres at ${location} uses encoding ${rows[0]?.server_encoding}; Troupe needs a UTF8 database (its keys sort as UTF-8 bytes)`, {
          details: { location, encoding: rows[0]?.server_encoding },
        });
      }
      await migrate(client, location, o.create);
    } finally {
      client.release();
    }
  } catch (error) {
    if (owned) await pool.end().catch(() => {});
    throw failed(location, 'opening', error);
  }
  status = 'open';

  const leaseListeners = new Set<(lost: readonly RunClaim[]) => void>();
  const availableListeners = new Set<() => void>();
  const mailListeners = new Set<(runId: string) => void>();
  const leases = createLeases({
    pool,
    location,
    leaseMs: o.leaseMs,
    heartbeatMs: o.heartbeatMs,
    clock: o.clock,
    lost: (claims) => {
      for (const listener of leaseListeners) listener(claims);
    },
  });
  const pending = new Set<Promise<unknown>>();
  let closing: Promise<void> | undefined;
  let listener: { client?: PoolClient; ready: Promise<void>; released: boolean } | undefined;

  const ensureOpen = () => {
    if (status !== 'open') throw new TroupeError(ErrorCode.STORAGE_CLOSED, `storage at ${location} is ${status}`);
  };
  const track = <T>(work: Promise<T>): Promise<T> => {
    pending.add(work);
    const untrack = () => pending.delete(work);
    work.then(untrack, untrack);
    return work;
  };

  /** One transaction; tried again on a deadlock or serialisation failure, which applied nothing. */
  const transaction = async (sync: boolean, body: (client: PoolClient) => Promise<void>): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      const client = await pool.connect();
      let broken: Error | undefined;
      try {
        // A node frozen inside a transaction would hold its claims' rows locked forever; the
        // server ends such a transaction after a lease, so others can take the runs.
        await client.query(`BEGIN; SET LOCAL synchronous_commit = ${sync ? 'on' : 'off'}; SET LOCAL idle_in_transaction_session_timeout = ${o.leaseMs}`);
        await body(client);
        await client.query('COMMIT');
        return;
      } catch (error) {
        await client.query('ROLLBACK').catch((e: Error) => (broken = e));
        const state = (error as { code?: unknown })?.code;
        if (typeof state === 'string' && RETRY_STATES.has(state) && attempt < 5) continue;
        throw error;
      } finally {
        client.release(broken);
      }
    }
  };

  const shared: SharedRuns = {
    leaseMs: o.leaseMs,
    async claimable(owner, crews, limit, exclude) {
      ensureOpen();
      return track(leases.claimable(owner, crews, limit, exclude)).catch((error: unknown) => Promise.reject(failed(location, 'claiming free runs', error)));
    },
    onLeaseLost(fn) {
      leaseListeners.add(fn);
      return () => leaseListeners.delete(fn);
    },
    onRunsAvailable(fn) {
      availableListeners.add(fn);
      listen();
      return () => availableListeners.delete(fn);
    },
    onMail(fn) {
      mailListeners.add(fn);
      listen();
      return () => mailListeners.delete(fn);
    },
  };

  /** The connection that LISTENs for runs to take, opened on the first subscriber. */
  const listen = () => {
    if (listener || status !== 'open') return;
    const l: { client?: PoolClient; ready: Promise<void>; released: boolean } = { ready: Promise.resolve(), released: false };
    listener = l;
    const lost = () => {
      if (listener !== l) return;
      listener = undefined;
      // Listening again soon; meanwhile (and for what was missed) polling finds the runs and the mail.
      if (status === 'open') backgroundTimer(o.clock, listen, RELISTEN_MS);
    };
    l.ready = (async () => {
      const client = await pool.connect();
      l.client = client;
      client.on('notification', (message) => {
        if (message.channel === MAIL_CHANNEL) {
          if (message.payload) for (const fn of mailListeners) fn(message.payload);
        } else for (const fn of availableListeners) fn();
      });
      // The server may end this connection at any time (a restart, a dropped database, even
      // after close() gave it back): never a crash, and never released twice.
      client.on('error', () => {
        if (!l.released) {
          l.released = true;
          client.release(true);
        }
        lost();
      });
      await client.query(`LISTEN ${RUNS_CHANNEL}; LISTEN ${MAIL_CHANNEL}`);
    })();
    l.ready.catch(lost);
  };

  const storage: Storage = {
    location,
    shared,
    get status() {
      return status;
    },
    async get(key) {
      ensureOpen();
      try {
        const { rows } = await track(pool.query<{ value: Buffer }>('SELECT value FROM troupe_kv WHERE key = $1', [key]));
        return rows[0]?.value;
      } catch (error) {
        throw failed(location, `reading ${key}`, error);
      }
    },
    async write(ops: readonly StorageOp[], writeOptions: WriteOptions = {}) {
      ensureOpen();
      assertOps(ops);
      for (const op of ops) if (BAD_KEY.test(op.key)) throw new TypeError(`write(ops): key ${JSON.stringify(op.key)} holds U+0000 or a lone surrogate, which Postgres text cannot store`);
      const fence = writeOptions.fence ?? [];
      for (const claim of fence) assertClaim(claim, 'write(ops, { fence })');
      // The last op of each key decides it: what applying them in order would leave.
      const last = new Map<string, StorageOp>();
      for (const op of ops) last.set(op.key, op);
      // Sorted, so two transactions writing shared keys (blobs) lock them in the same order.
      const finalOps = [...last.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      const projection = projectionOf(finalOps);
      const puts = finalOps.filter((op): op is Extract<StorageOp, { type: 'put' }> => op.type === 'put');
      const dels = finalOps.filter((op) => op.type === 'del').map((op) => op.key);
      const work = transaction(writeOptions.sync ?? o.sync, async (client) => {
        if (fence.length > 0) {
          // FOR SHARE: writes of one owner do not wait for each other, a taking (an UPDATE) waits for them.
          const { rows } = await client.query<{ run_id: string; owner: string | null; epoch: string; held: boolean }>(
            'SELECT run_id, owner, epoch, expires_at IS NOT NULL AS held FROM troupe_claims WHERE run_id = ANY($1::text[]) ORDER BY run_id FOR SHARE',
            [[...new Set(fence.map((c) => c.runId))]],
          );
          const now = new Map(rows.map((r) => [r.run_id, r]));
          const lost = fence.filter((c) => {
            const row = now.get(c.runId);
            return !(row && row.held && row.owner === c.owner && Number(row.epoch) === c.epoch);
          });
          if (lost.length > 0) {
            throw leaseLostError(lost, (runId) => {
              const row = now.get(runId);
              return row?.held && row.owner !== null ? `owner "${row.owner}" holds it at epoch ${row.epoch}` : 'nobody holds it now';
            });
          }
        }
        if (dels.length > 0) await client.query('DELETE FROM troupe_kv WHERE key = ANY($1::text[])', [dels]);
        if (puts.length > 0) {
          await client.query(
            `INSERT INTO troupe_kv (key, value) SELECT k, v FROM unnest($1::text[], $2::bytea[]) AS t(k, v) ORDER BY k
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`,
            [puts.map((op) => op.key), puts.map((op) => op.value)],
          );
        }
        await writeProjection(client, projection);
      });
      try {
        await track(work);
      } catch (error) {
        throw failed(location, 'writing a batch', error);
      }
    },
    async *entries(range: KeyRange) {
      ensureOpen();
      const reverse = range.reverse ?? false;
      let remaining = range.limit !== undefined && range.limit >= 0 ? range.limit : Infinity;
      let low: { key: string; inclusive: boolean } | undefined = range.gte === undefined ? undefined : { key: range.gte, inclusive: true };
      let high: { key: string; inclusive: boolean } | undefined = range.lt === undefined ? undefined : { key: range.lt, inclusive: false };
      // Pages by key (no cursor, no transaction held open while the caller works between entries),
      // growing like LevelDB's chunks: a resume reads thousands of entries.
      for (let size = 64; remaining > 0; size = Math.min(size * 4, 2048)) {
        const where: string[] = [];
        const params: unknown[] = [];
        if (low) where.push(`key ${low.inclusive ? '>=' : '>'} $${params.push(low.key)}`);
        if (high) where.push(`key ${high.inclusive ? '<=' : '<'} $${params.push(high.key)}`);
        const take = Math.min(size, remaining);
        const sql = `SELECT key, value FROM troupe_kv ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY key ${reverse ? 'DESC' : 'ASC'} LIMIT $${params.push(take)}`;
        let rows: Array<{ key: string; value: Buffer }>;
        try {
          ensureOpen();
          rows = (await track(pool.query<{ key: string; value: Buffer }>(sql, params))).rows;
        } catch (error) {
          throw failed(location, 'reading a range', error);
        }
        for (const row of rows) yield [row.key, row.value] as [string, Uint8Array];
        remaining -= rows.length;
        if (rows.length < take) return;
        const lastKey = rows[rows.length - 1]!.key;
        if (reverse) high = { key: lastKey, inclusive: false };
        else low = { key: lastKey, inclusive: false };
      }
    },
    async claim(runId, owner) {
      ensureOpen();
      try {
        return await track(leases.claim(runId, owner));
      } catch (error) {
        throw failed(location, `claiming run ${runId}`, error);
      }
    },
    async release(claim) {
      if (status !== 'open') return;
      try {
        await track(leases.release(claim));
      } catch (error) {
        throw failed(location, `releasing run ${claim.runId}`, error);
      }
    },
    close() {
      if (status === 'closed') return Promise.resolve();
      closing ??= (async () => {
        status = 'closing';
        await Promise.allSettled([...pending]);
        // Released rather than left to expire: another node may take these runs at once.
        await leases.close().catch(() => {});
        leaseListeners.clear();
        availableListeners.clear();
        mailListeners.clear();
        const l = listener;
        listener = undefined;
        if (l) {
          await l.ready.catch(() => {});
          await l.client?.query('UNLISTEN *').catch(() => {});
          if (l.client && !l.released) {
            l.released = true;
            l.client.release();
          }
        }
        // The error listener stays: a connection the server ends during or after end() must not crash the process.
        if (owned) await pool.end().catch(() => {});
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
