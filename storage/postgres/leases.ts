import type { Pool } from 'pg';
import { assertClaim, assertClaimArgs, runClaimedError } from '../../core/claims.js';
import { backgroundTimer, type Clock } from '../../core/clock.js';
import type { RunClaim } from '../../core/storage.js';
import { RUNS_CHANNEL } from './projection.js';

/**
 * Run claims on Postgres: leases. A claim is a row of `troupe_claims` with an owner, an
 * epoch and an expiry; it is takeable when released (`expires_at` NULL) or expired, and
 * every taking adds one to the epoch. Expiry is judged by the database's clock, so the
 * nodes' clocks need not agree. The object that granted claims renews them (the
 * heartbeat) until they are released, and reports the ones it could not renew.
 * @module
 */

/** What {@link createLeases} needs. */
export interface LeasesOptions {
  pool: Pool;
  location: string;
  leaseMs: number;
  heartbeatMs: number;
  clock: Clock;
  /** Called with the claims whose lease was not renewed (taken over, or renewal failing for a whole lease). */
  lost(claims: RunClaim[]): void;
}

/** The lease half of the Postgres storage; see {@link createLeases}. */
export interface Leases {
  claim(runId: string, owner: string): Promise<RunClaim>;
  release(claim: RunClaim): Promise<void>;
  claimable(owner: string, crews: readonly string[], limit: number, exclude?: readonly string[]): Promise<RunClaim[]>;
  /** Renews every held lease now; resolves when done (the heartbeat calls it). */
  renew(): Promise<void>;
  /** Stops the heartbeat and releases every held claim. */
  close(): Promise<void>;
}

const LEASE = `clock_timestamp() + $LEASE * interval '1 millisecond'`;

interface Held {
  claim: RunClaim;
  /** When the lease was last granted or renewed, on the local clock. */
  renewedAt: number;
}

/** Creates the leases of one storage object. */
export function createLeases(o: LeasesOptions): Leases {
  const held = new Map<string, Held>();
  const lease = (sql: string, n: number) => sql.replaceAll('$LEASE', `$${n}`);
  let stopTimer: (() => void) | undefined;
  let renewing: Promise<void> | undefined;
  let closed = false;

  const hold = (claim: RunClaim) => {
    held.set(claim.runId, { claim, renewedAt: o.clock.now() });
    schedule();
  };
  const schedule = () => {
    if (stopTimer || closed || held.size === 0) return;
    stopTimer = backgroundTimer(
      o.clock,
      () => {
        stopTimer = undefined;
        void renew().finally(schedule);
      },
      o.heartbeatMs,
    );
  };
  const isHeld = (claim: RunClaim) => {
    const h = held.get(claim.runId);
    return h !== undefined && h.claim.owner === claim.owner && h.claim.epoch === claim.epoch;
  };

  const renew = (): Promise<void> => {
    renewing ??= (async () => {
      const claims = [...held.values()].map((h) => h.claim);
      if (claims.length === 0) return;
      const started = o.clock.now();
      let renewed: Set<string> | undefined;
      try {
        const { rows } = await o.pool.query<{ run_id: string }>(
          lease(
            `UPDATE troupe_claims c SET expires_at = ${LEASE}
               FROM unnest($1::text[], $2::text[], $3::bigint[]) AS h(run_id, owner, epoch)
              WHERE c.run_id = h.run_id AND c.owner = h.owner AND c.epoch = h.epoch AND c.expires_at IS NOT NULL
              RETURNING c.run_id`,
            4,
          ),
          [claims.map((c) => c.runId), claims.map((c) => c.owner), claims.map((c) => c.epoch), o.leaseMs],
        );
        renewed = new Set(rows.map((r) => r.run_id));
      } catch {
        // Unreachable database: the leases stand until they expire; past that, others may take them.
      }
      const lost: RunClaim[] = [];
      for (const claim of claims) {
        const h = held.get(claim.runId);
        if (!h || h.claim !== claim) continue; // released meanwhile
        if (renewed?.has(claim.runId)) h.renewedAt = started;
        else if (renewed || o.clock.now() - h.renewedAt >= o.leaseMs) {
          held.delete(claim.runId);
          lost.push(claim);
        }
      }
      if (lost.length > 0) o.lost(lost);
    })().finally(() => (renewing = undefined));
    return renewing;
  };

  return {
    async claim(runId, owner) {
      assertClaimArgs(runId, owner);
      // Tried again only when the claim was let go between the two statements.
      for (let attempt = 1; ; attempt++) {
        const { rows } = await o.pool.query<{ epoch: string }>(
          lease(
            `INSERT INTO troupe_claims AS c (run_id, owner, epoch, expires_at, claimed_at) VALUES ($1, $2, 1, ${LEASE}, clock_timestamp())
             ON CONFLICT (run_id) DO UPDATE SET owner = EXCLUDED.owner, epoch = c.epoch + 1, expires_at = EXCLUDED.expires_at, claimed_at = EXCLUDED.claimed_at
              WHERE c.expires_at IS NULL OR c.expires_at <= clock_timestamp()
             RETURNING epoch`,
            3,
          ),
          [runId, owner, o.leaseMs],
        );
        if (rows[0]) {
          const claim = Object.freeze({ runId, owner, epoch: Number(rows[0].epoch) });
          hold(claim);
          return claim;
        }
        const holder = await o.pool.query<{ owner: string | null; epoch: string; live: boolean }>(
          'SELECT owner, epoch, expires_at IS NOT NULL AND expires_at > clock_timestamp() AS live FROM troupe_claims WHERE run_id = $1',
          [runId],
        );
        const row = holder.rows[0];
        // Released or expired between the two statements: try again (a few times: under
        // heavy contention the next taker may win each time, and the caller hears so).
        if ((row?.live && row.owner !== null) || attempt >= 3) throw runClaimedError(runId, row?.owner ?? 'another owner', row ? Number(row.epoch) : undefined, o.location);
      }
    },

    async release(claim) {
      assertClaim(claim, 'release(claim)');
      if (!isHeld(claim)) return;
      held.delete(claim.runId);
      await o.pool.query(
        `WITH r AS (UPDATE troupe_claims SET expires_at = NULL WHERE run_id = $1 AND owner = $2 AND epoch = $3 AND expires_at IS NOT NULL RETURNING run_id)
         SELECT pg_notify($4, 'released') FROM r`,
        [claim.runId, claim.owner, claim.epoch, RUNS_CHANNEL],
      );
    },

    async claimable(owner, crews, limit, exclude = []) {
      assertClaimArgs('any', owner);
      if (!Number.isInteger(limit) || limit < 0) throw new TypeError('claimable(owner, crews, limit) needs a non-negative integer limit');
      if (limit === 0 || crews.length === 0) return [];
      // SKIP LOCKED: a run another node is taking (or writing under its claim) is passed over, not waited for.
      const { rows } = await o.pool.query<{ run_id: string; epoch: string }>(
        lease(
          `WITH free AS (
             SELECT c.run_id FROM troupe_claims c JOIN troupe_runs r USING (run_id)
              WHERE (r.status = 'running' OR (r.status = 'waiting' AND EXISTS (
                       -- Mail waits for it: the human it waits for is not all it needs.
                       SELECT 1 FROM troupe_kv k WHERE k.key >= 'inq:' || r.run_id || ':' AND k.key < 'inq:' || r.run_id || ';')))
                AND r.part_of IS NULL AND r.crew = ANY($2::text[]) AND NOT (r.run_id = ANY($5::text[]))
                AND (c.expires_at IS NULL OR c.expires_at <= clock_timestamp())
              ORDER BY r.started_at, r.run_id
              LIMIT $3
              FOR UPDATE OF c SKIP LOCKED)
           UPDATE troupe_claims c SET owner = $1, epoch = c.epoch + 1, expires_at = ${LEASE}, claimed_at = clock_timestamp()
             FROM free WHERE c.run_id = free.run_id
           RETURNING c.run_id, c.epoch`,
          4,
        ),
        [owner, [...crews], limit, o.leaseMs, [...exclude]],
      );
      return rows.map((r) => {
        const claim = Object.freeze({ runId: r.run_id, owner, epoch: Number(r.epoch) });
        hold(claim);
        return claim;
      });
    },

    renew,

    async close() {
      closed = true;
      stopTimer?.();
      stopTimer = undefined;
      await renewing;
      const claims = [...held.values()].map((h) => h.claim);
      held.clear();
      if (claims.length === 0) return;
      await o.pool.query(
        `WITH r AS (UPDATE troupe_claims c SET expires_at = NULL
                      FROM unnest($1::text[], $2::text[], $3::bigint[]) AS h(run_id, owner, epoch)
                     WHERE c.run_id = h.run_id AND c.owner = h.owner AND c.epoch = h.epoch AND c.expires_at IS NOT NULL
                 RETURNING c.run_id)
         SELECT pg_notify($4, 'released') FROM r LIMIT 1`,
        [claims.map((c) => c.runId), claims.map((c) => c.owner), claims.map((c) => c.epoch), RUNS_CHANNEL],
      );
    },
  };
}
