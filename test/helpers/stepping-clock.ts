import { manualClock, type Clock, type ManualClock } from '../../core/clock.js';

/** A {@link manualClock} that runs every timer as soon as it is armed, recording it. */
export interface SteppingClock extends Clock {
  /** Every timer armed so far: when, and for how long, on this clock. */
  readonly armed: ReadonlyArray<{ at: number; ms: number }>;
  readonly manual: ManualClock;
}

/**
 * Time jumps straight to each timer's deadline (on the microtask after it was armed, so its
 * owner has finished setting it up), so backoffs of any length take no wall time and every
 * wait the code asked for is on record, exactly. The order of events is the real one: time
 * only moves when something waits for it.
 */
export function steppingClock(start = 0): SteppingClock {
  const manual = manualClock(start);
  const armed: Array<{ at: number; ms: number }> = [];
  return {
    manual,
    armed,
    now: () => manual.now(),
    setTimer(fn, ms) {
      const at = manual.now() + Math.max(0, ms);
      armed.push({ at: manual.now(), ms });
      let live = true;
      const cancel = manual.setTimer(() => {
        live = false;
        fn();
      }, ms);
      queueMicrotask(() => {
        if (live) manual.advance(Math.max(0, at - manual.now()));
      });
      return () => {
        live = false;
        cancel();
      };
    },
  };
}
