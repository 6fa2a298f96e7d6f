import { fromPromise } from 'xstate';
import { sleep, type Clock } from '../core/clock.js';

/**
 * A timer whose deadline lives in the parent's context. XState's `after` delays are lost
 * when a snapshot is restored (statelyai/xstate#5331); an invoked promise is re-run on
 * restore instead, and re-computes the remaining time from the stored deadline.
 */
export function durableTimer(clock: Clock) {
  return fromPromise<void, { deadline: number }>(({ input, signal }) => sleep(clock, input.deadline - clock.now(), signal));
}
