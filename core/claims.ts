import { decode, encode } from './codec.js';
import { ErrorCode, TroupeError } from './errors.js';
import { claimKey, type RunClaim } from './storage.js';

/** What {@link createLocalClaims} needs from the storage it serves. */
export interface LocalClaimsIO {
  /** Where the data lives, for messages. */
  location: string;
  get(key: string): Promise<Uint8Array | undefined>;
  /** An unfenced single-key write. */
  put(key: string, value: Uint8Array): Promise<void>;
}

/** Run claims of an embedded storage (one process per database); see {@link createLocalClaims}. */
export interface LocalClaims {
  claim(runId: string, owner: string): Promise<RunClaim>;
  release(claim: RunClaim): void;
  /**
   * Checks `fence` and, when every claim in it is current, starts `write` at once (no await
   * in between, so nothing can take a run between the check and the write).
   * Fails with `LEASE_LOST` listing every lost claim otherwise, without calling `write`.
   */
  fenced(fence: readonly RunClaim[] | undefined, write: () => Promise<void>): Promise<void>;
  /** Forgets every live claim: the storage object that granted them is closed. */
  clear(): void;
}

interface Held {
  owner: string;
  /** `NaN` while the claim's epoch is being read and written: current for nobody yet. */
  epoch: number;
}

/** Throws a `TypeError` unless `runId` and `owner` are what {@link Storage.claim} takes. */
export function assertClaimArgs(runId: string, owner: string): void {
  if (typeof runId !== 'string' || runId.length === 0) throw new TypeError('claim(runId, owner) needs a run id');
  if (typeof owner !== 'string' || owner.length === 0) throw new TypeError('claim(runId, owner) needs an owner id (who executes the run)');
}

/** The `RUN_CLAIMED` error of every storage: `holder` executes `runId` (at `epoch`, when known). */
export function runClaimedError(runId: string, holder: string, epoch: number | undefined, location: string): TroupeError {
  return new TroupeError(
    ErrorCode.RUN_CLAIMED,
    `run "${runId}" is being executed by owner "${holder}"${epoch === undefined ? '' : ` (epoch ${epoch})`} on ${location}; a run is executed by one node at a time`,
    { details: { runId, holder, ...(epoch === undefined ? {} : { epoch }) } },
  );
}

/**
 * The `LEASE_LOST` error of every storage: the batch fenced by `lost` wrote nothing.
 * `describe(runId)` says who holds each run now.
 */
export function leaseLostError(lost: readonly RunClaim[], describe: (runId: string) => string): TroupeError {
  const what = lost.map((c) => `run "${c.runId}" (owner "${c.owner}", epoch ${c.epoch}; ${describe(c.runId)})`).join(', ');
  return new TroupeError(ErrorCode.LEASE_LOST, `lost the claim on ${what}: nothing was written`, {
    details: { lost: lost.map(({ runId, owner, epoch }) => ({ runId, owner, epoch })) },
  });
}

/** Throws a `TypeError` unless `claim` has the shape {@link Storage.claim} returns. */
export function assertClaim(claim: RunClaim, use: string): void {
  if (typeof claim?.runId !== 'string' || typeof claim.owner !== 'string' || !Number.isInteger(claim.epoch)) {
    throw new TypeError(`${use} takes a claim returned by claim(runId, owner): { runId, owner, epoch }`);
  }
}

/**
 * The claim half of the {@link Storage} contract for LevelDB and memory storage. Such a
 * database is open in one process at a time (LevelDB's LOCK file), so liveness needs no
 * lease: a claim is live from `claim` until `release` on this object. Claims survive only
 * as their epoch under `claim:<runId>`, so a claim left by a process that died is simply
 * taken, at a higher epoch, by the next one.
 */
export function createLocalClaims(io: LocalClaimsIO): LocalClaims {
  const live = new Map<string, Held>();
  // Fenced writes still in flight, per run: a new claim waits for them, so that no write of
  // an earlier epoch can land after the new epoch is on disk.
  const inflight = new Map<string, Set<Promise<void>>>();

  const isCurrent = (claim: RunClaim) => {
    const held = live.get(claim.runId);
    return held !== undefined && held.owner === claim.owner && held.epoch === claim.epoch;
  };

  const describe = (runId: string) => {
    const held = live.get(runId);
    if (!held) return 'nobody holds it now';
    return Number.isNaN(held.epoch) ? `owner "${held.owner}" is claiming it` : `owner "${held.owner}" holds it at epoch ${held.epoch}`;
  };

  return {
    async claim(runId, owner) {
      assertClaimArgs(runId, owner);
      const held = live.get(runId);
      if (held) throw runClaimedError(runId, held.owner, Number.isNaN(held.epoch) ? undefined : held.epoch, io.location);
      // Reserved synchronously: a concurrent claim of the same run fails instead of racing.
      const reservation: Held = { owner, epoch: Number.NaN };
      live.set(runId, reservation);
      try {
        await Promise.allSettled([...(inflight.get(runId) ?? [])]);
        const raw = await io.get(claimKey(runId));
        const previous = raw ? (decode(raw, Infinity) as { epoch?: unknown }).epoch : 0;
        const epoch = (Number.isInteger(previous) ? (previous as number) : 0) + 1;
        await io.put(claimKey(runId), encode({ owner, epoch }));
        reservation.epoch = epoch;
        return Object.freeze({ runId, owner, epoch });
      } catch (error) {
        if (live.get(runId) === reservation) live.delete(runId);
        throw error;
      }
    },

    release(claim) {
      assertClaim(claim, 'release(claim)');
      if (isCurrent(claim)) live.delete(claim.runId);
    },

    fenced(fence, write) {
      if (fence === undefined || fence.length === 0) return write();
      for (const claim of fence) assertClaim(claim, 'write(ops, { fence })');
      const lost = fence.filter((claim) => !isCurrent(claim));
      if (lost.length > 0) return Promise.reject(leaseLostError(lost, describe));
      const done = write();
      for (const { runId } of fence) {
        let set = inflight.get(runId);
        if (!set) inflight.set(runId, (set = new Set()));
        set.add(done);
      }
      const untrack = () => {
        for (const { runId } of fence) {
          const set = inflight.get(runId);
          set?.delete(done);
          if (set?.size === 0) inflight.delete(runId);
        }
      };
      done.then(untrack, untrack);
      return done;
    },

    clear() {
      live.clear();
    },
  };
}
