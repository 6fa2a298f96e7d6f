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

/**
 * Like {@link durableTimer}, for an optional deadline: with `null` it never fires (it just
 * waits until its state is left, which aborts it).
 */
export function durableDeadline(clock: Clock) {
  return fromPromise<void, { deadline: number | null }>(({ input, signal }) =>
    input.deadline === null
      ? new Promise<void>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }))
      : sleep(clock, input.deadline - clock.now(), signal),
  );
}
