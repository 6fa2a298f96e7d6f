import { fromPromise } from 'xstate';
import { sleep } from '../core/clock.js';
import { runtimeOf } from '../core/runtime.js';

/**
 * A timer whose deadline lives in the parent's context, on the clock of the run it acts in.
 * XState's `after` delays are lost when a snapshot is restored (statelyai/xstate#5331); an
 * invoked promise is re-run on restore instead, and re-computes the remaining time from the
 * stored deadline.
 */
export const durableTimer = fromPromise<void, { deadline: number }>(({ input, signal, system }) => {
  const { clock } = runtimeOf(system);
  return sleep(clock, input.deadline - clock.now(), signal);
});

/**
 * Like {@link durableTimer}, for an optional deadline: with `null` it never fires (it just
 * waits until its state is left, which aborts it).
 */
export const durableDeadline = fromPromise<void, { deadline: number | null }>(({ input, signal, system }) => {
  if (input.deadline === null) return new Promise<void>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }));
  const { clock } = runtimeOf(system);
  return sleep(clock, input.deadline - clock.now(), signal);
});
