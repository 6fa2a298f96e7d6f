/**
 * Time and identity are injected so runs are reproducible: tests pass a manual clock and a
 * counting id generator, production uses the defaults below.
 */

/** A source of time and timers. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Calls `fn` after `ms`; returns a function that cancels it. */
  setTimer(fn: () => void, ms: number): () => void;
}

/** Produces unique ids; `prefix` names what the id is for (`run`, `env`, `call`). */
export type IdGenerator = (prefix: string) => string;

/** The wall clock with real timers. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    const handle = setTimeout(fn, Math.max(0, ms));
    return () => clearTimeout(handle);
  },
};

/**
 * A timer for the node's own housekeeping (unloading idle runs): on the wall clock it does
 * not keep the process alive; on an injected clock it is an ordinary timer of that clock.
 */
export function backgroundTimer(clock: Clock, fn: () => void, ms: number): () => void {
  if (clock !== systemClock) return clock.setTimer(fn, ms);
  const handle = setTimeout(fn, Math.max(0, ms));
  handle.unref();
  return () => clearTimeout(handle);
}

/** Random, collision-resistant ids (`run_9f2c…`). */
export const randomIds: IdGenerator = (prefix) =>
  `${prefix}_${globalThis.crypto.randomUUID().replaceAll('-', '').slice(0, 20)}`;

/** Deterministic ids for tests: `run_1`, `env_2`, … (one counter per generator). */
export function countingIds(): IdGenerator {
  const counters = new Map<string, number>();
  return (prefix) => {
    const next = (counters.get(prefix) ?? 0) + 1;
    counters.set(prefix, next);
    return `${prefix}_${next}`;
  };
}

/**
 * Resolves after `ms` on `clock`, or rejects with the signal's reason when aborted.
 * Used by durable timers, whose deadline is stored so the remaining time survives a restore.
 */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      cancel();
      reject(signal?.reason);
    };
    const cancel = clock.setTimer(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A seeded pseudo-random source in [0, 1) (mulberry32): reproducible schedules and inputs
 * for tests, fuzzing and crash trials, replayable from the seed.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A clock that only moves when told to: deterministic timers for tests. */
export interface ManualClock extends Clock {
  /** Moves time forward, firing due timers in order. */
  advance(ms: number): void;
  /** Timers not yet fired. */
  readonly pending: number;
}

/** Creates a {@link ManualClock} starting at `start` ms. */
export function manualClock(start = 0): ManualClock {
  let now = start;
  let nextId = 0;
  const timers = new Map<number, { at: number; fn: () => void }>();
  return {
    now: () => now,
    get pending() {
      return timers.size;
    },
    setTimer(fn, ms) {
      const id = nextId++;
      timers.set(id, { at: now + Math.max(0, ms), fn });
      return () => timers.delete(id);
    },
    advance(ms) {
      const target = now + ms;
      while (true) {
        const due = [...timers.entries()].filter(([, t]) => t.at <= target).sort((a, b) => a[1].at - b[1].at || a[0] - b[0])[0];
        if (!due) break;
        timers.delete(due[0]);
        now = due[1].at;
        due[1].fn();
      }
      now = target;
    },
  };
}
