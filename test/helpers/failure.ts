import { isTroupeError, type TroupeError } from '../../core/errors.js';

/** The `TroupeError` a promise rejects with; fails the test if it resolves or rejects with anything else. */
export async function failure(promise: Promise<unknown>): Promise<TroupeError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!isTroupeError(error)) throw new Error(`expected a TroupeError, got ${String(error)}`);
  return error;
}
