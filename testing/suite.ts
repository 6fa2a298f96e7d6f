/**
 * What the conformance suites of `troupe/testing` register their cases with. They take the
 * runner's functions instead of importing one, so Troupe depends on no test runner: pass
 * vitest's, jest's or `node:test`'s `describe`, `it` and `afterEach`. Assertions use
 * `node:assert`, whose failures every runner reports.
 * @module
 */
import assert from 'node:assert/strict';

/** The subset of a test runner's API a conformance suite uses. */
export interface TestRegistrar {
  /** Groups cases under a name. */
  describe(name: string, body: () => void): unknown;
  /** Registers one case; it fails when `body` rejects. */
  it(name: string, body: () => Promise<void>): unknown;
  /** Runs `body` after each case of the enclosing group. */
  afterEach(body: () => Promise<void>): unknown;
}

/** Asserts that `actual` has every field of `expected` with a deeply equal value (others may differ). */
export function assertFields(actual: unknown, expected: Record<string, unknown>, message: string): void {
  assert.ok(typeof actual === 'object' && actual !== null, `${message}: expected an object, got ${String(actual)}`);
  const picked = Object.fromEntries(Object.keys(expected).map((key) => [key, (actual as Record<string, unknown>)[key]]));
  assert.deepStrictEqual(picked, expected, message);
}
