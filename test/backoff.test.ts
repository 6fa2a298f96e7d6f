import { describe, expect, it } from 'vitest';
import { backoffDelay, checkBackoff, jitterUnit } from '../core/backoff.js';

const policy = { initialDelayMs: 100, maxDelayMs: 5_000, factor: 2, jitter: 0.5 };

describe('backoff', () => {
  it('grows exponentially to its cap, and jitter only ever shortens a wait', () => {
    for (let attempt = 1; attempt <= 12; attempt++) {
      const base = Math.min(5_000, 100 * 2 ** (attempt - 1));
      for (const who of ['run_1/a', 'run_1/b', 'run_2/a']) {
        const delay = backoffDelay(policy, attempt, jitterUnit(who, attempt));
        expect(delay, `${who} attempt ${attempt}`).toBeGreaterThanOrEqual(Math.round(base * 0.5));
        expect(delay, `${who} attempt ${attempt}`).toBeLessThanOrEqual(base);
        expect(Number.isInteger(delay)).toBe(true);
      }
    }
    // The ends of the jitter range, and no jitter at all.
    expect(backoffDelay(policy, 3, 0)).toBe(400);
    expect(backoffDelay(policy, 3, 0.999_999)).toBe(200);
    expect(backoffDelay({ ...policy, jitter: 0 }, 3, 0.7)).toBe(400);
    expect(backoffDelay({ ...policy, jitter: 1 }, 20, 0.25)).toBe(3_750);
    expect(backoffDelay({ initialDelayMs: 150, maxDelayMs: 1_000, factor: 1.5, jitter: 0 }, 3, 0)).toBe(338);
  });

  it('derives jitter reproducibly from its inputs, spread evenly across callers', () => {
    expect(jitterUnit('run_1', 'researcher', 1, 2, 3)).toBe(jitterUnit('run_1', 'researcher', 1, 2, 3));
    expect(jitterUnit('ab', 'c')).not.toBe(jitterUnit('a', 'bc'));
    const units = Array.from({ length: 2_000 }, (_, i) => jitterUnit('run_1', `agent${i}`, 1));
    expect(units.every((u) => u >= 0 && u < 1)).toBe(true);
    expect(new Set(units).size).toBeGreaterThan(1_990);
    const mean = units.reduce((a, b) => a + b, 0) / units.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.03);
    // Each tenth of [0, 1) gets its share: neighbouring inputs do not cluster.
    const deciles = Array.from({ length: 10 }, (_, d) => units.filter((u) => Math.floor(u * 10) === d).length);
    for (const count of deciles) expect(count).toBeGreaterThan(140);
  });

  it('refuses policies that break a rule with a TypeError naming the field', () => {
    const check = (extra: Partial<typeof policy>) => () => checkBackoff('agent "a"', 'retry.', { ...policy, ...extra });
    expect(check({ factor: 0.5 })).toThrow(/agent "a": retry.factor must be a number of at least 1/);
    expect(check({ jitter: 1.5 })).toThrow(/retry.jitter must be a fraction between 0 and 1/);
    expect(check({ initialDelayMs: -1 })).toThrow(/retry.initialDelayMs must be a non-negative/);
    expect(check({ initialDelayMs: 10_000 })).toThrow(/retry.initialDelayMs must not exceed retry.maxDelayMs/);
    expect(check({})()).toEqual(policy);
  });
});
