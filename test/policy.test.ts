import { describe, expect, it } from 'vitest';
import { assertScope, decide, definePolicy, describeDecision, findWidening, isNarrowerOrEqual, matches, narrow, type Decision, type Policy } from '../core/policy.js';
import { seededRandom } from '../core/clock.js';

describe('patterns', () => {
  it.each([
    ['fs:read', 'fs:read', true],
    ['fs:read', 'fs:write', false],
    ['fs:*', 'fs:read', true],
    ['fs:*', 'fs:read:/tmp', true],
    ['fs:*', 'fs', false],
    ['fs:*', 'fsx:read', false],
    ['fs:read:*', 'fs:read:/tmp/a.txt', true],
    ['fs:read:*', 'fs:read', false],
    ['*', 'net', true],
    ['*', 'net:api.example.com', true],
    ['net', 'net:api.example.com', false],
    ['net:*', 'net:api.example.com', true],
  ])('%s matches %s: %s', (pattern, scope, expected) => {
    expect(matches(pattern, scope)).toBe(expected);
  });

  it.each([
    [{ allow: ['f*'] }, /"f\*": "\*" may only be a whole last segment/],
    [{ allow: ['*:read'] }, /"\*:read": "\*" may only be a whole last segment/],
    [{ deny: ['fs::read'] }, /segments must be non-empty/],
    [{ ask: ['net: x'] }, /without whitespace/],
    [{ allow: [''] }, /must be 1 to 512 characters/],
    [{ allow: 'fs:read' as unknown as string[] }, /allow/],
    [{ allows: ['fs:read'] } as unknown as Policy, /allows/],
  ])('refuses a bad policy %j with a TypeError stating the rule', (policy, message) => {
    expect(() => definePolicy(policy)).toThrow(TypeError);
    expect(() => definePolicy(policy)).toThrow(message);
    expect(() => decide(policy, ['fs:read'])).toThrow(TypeError);
  });

  it('refuses a tool scope with a wildcard: a tool must name what it needs', () => {
    expect(() => decide({ allow: ['*'] }, ['fs:*'])).toThrow(/scope "fs:\*": a scope may not contain "\*"/);
    expect(() => assertScope('net:a b')).toThrow(/scope "net:a b": segments must be non-empty, without whitespace/);
    expect(() => assertScope('net:api.example.com')).not.toThrow();
  });

  it('returns a frozen copy', () => {
    const policy = definePolicy({ allow: ['fs:read'] });
    expect(Object.isFrozen(policy)).toBe(true);
    expect(Object.isFrozen(policy.allow)).toBe(true);
  });
});

describe('decide', () => {
  const policy: Policy = { allow: ['fs:*', 'net:api.example.com', 'blackboard:*'], ask: ['fs:write', 'net:*'], deny: ['fs:write:/etc', 'net:evil.example'] };

  // The decision table of docs/security.md.
  it.each<[readonly string[], Decision, string | undefined, string | undefined]>([
    [[], 'allow', undefined, undefined],
    [['fs:read'], 'allow', undefined, undefined],
    [['fs:write'], 'ask', 'fs:write', 'fs:write'],
    [['net:api.example.com'], 'ask', 'net:api.example.com', 'net:*'],
    [['fs:write:/etc'], 'deny', 'fs:write:/etc', 'fs:write:/etc'],
    [['net:evil.example'], 'deny', 'net:evil.example', 'net:evil.example'],
    [['shell'], 'deny', 'shell', undefined],
    [['fs:read', 'fs:write'], 'ask', 'fs:write', 'fs:write'],
    [['fs:read', 'fs:write', 'shell'], 'deny', 'shell', undefined],
    [['fs:write', 'net:evil.example'], 'deny', 'net:evil.example', 'net:evil.example'],
  ])('%j → %s (scope %s, rule %s)', (scopes, decision, scope, rule) => {
    const d = decide(policy, scopes);
    expect(d.decision).toBe(decision);
    expect(d.scope).toBe(scope);
    expect(d.rule).toBe(rule);
  });

  it('denies everything scoped under an empty policy, and allows unscoped tools', () => {
    expect(decide({}, ['fs:read']).decision).toBe('deny');
    expect(decide({}, []).decision).toBe('allow');
  });

  it('lets deny win over allow for the same scope, whatever the order of the lists', () => {
    expect(decide({ deny: ['*'], allow: ['*'] }, ['x']).decision).toBe('deny');
    expect(decide({ allow: ['x'], ask: ['x'] }, ['x']).decision).toBe('ask');
  });

  it('describes decisions in words for refusals and the audit log', () => {
    expect(describeDecision(decide(policy, ['shell']))).toBe('scope "shell" is denied: no rule of the policy covers it');
    expect(describeDecision(decide(policy, ['fs:write']))).toBe('scope "fs:write" needs approval by rule "fs:write"');
    expect(describeDecision(decide(policy, ['net:evil.example']))).toBe('scope "net:evil.example" denied by rule "net:evil.example"');
    expect(describeDecision(decide(policy, ['fs:read']))).toBe('allowed');
  });
});


const SEGMENTS = [['fs', 'net', 'db'], ['read', 'write', 'a.example'], ['/tmp', '/etc']];

function randomScope(rand: () => number): string {
  const depth = 1 + Math.floor(rand() * 3);
  return SEGMENTS.slice(0, depth).map((options) => options[Math.floor(rand() * options.length)]!).join(':');
}

function randomPattern(rand: () => number): string {
  const r = rand();
  if (r < 0.08) return '*';
  const scope = randomScope(rand);
  return r < 0.5 ? `${scope}:*` : scope;
}

function randomPolicy(rand: () => number): Policy {
  const list = () => Array.from({ length: Math.floor(rand() * 4) }, () => randomPattern(rand));
  return { allow: list(), ask: list(), deny: list() };
}

const ALL_SCOPES = (() => {
  const out: string[] = [];
  for (const a of SEGMENTS[0]!) {
    out.push(a);
    for (const b of SEGMENTS[1]!) {
      out.push(`${a}:${b}`);
      for (const c of SEGMENTS[2]!) out.push(`${a}:${b}:${c}`);
    }
  }
  // `zz` and `other` appear in no pattern: they stand for "any other segment" at each depth,
  // which makes this finite list exhaustive for the decision functions.
  return [...out, ...out.map((s) => `${s}:zz`), 'other'];
})();

const RANK: Record<Decision, number> = { allow: 0, ask: 1, deny: 2 };
const stricter = (a: Decision, b: Decision): Decision => (RANK[a] >= RANK[b] ? a : b);

describe('narrow', () => {
  it('decides each scope as the stricter of outer and inner (500 random policy pairs)', () => {
    const rand = seededRandom(7);
    for (let n = 0; n < 500; n++) {
      const outer = randomPolicy(rand);
      const inner = randomPolicy(rand);
      const both = narrow(outer, inner);
      const wrong = ALL_SCOPES.filter((scope) => decide(both, [scope]).decision !== stricter(decide(outer, [scope]).decision, decide(inner, [scope]).decision));
      expect(wrong, JSON.stringify({ outer, inner, both })).toEqual([]);
      expect(isNarrowerOrEqual(both, outer)).toBe(true);
      expect(isNarrowerOrEqual(both, inner)).toBe(true);
    }
  });

  it('allows a scope only if both allow it, asks if either asks, denies what either does not cover', () => {
    const crew: Policy = { allow: ['fs:*', 'net:*'], ask: ['fs:write'] };
    const agent: Policy = { allow: ['fs:read', 'net:api.example.com', 'shell'] , ask: ['fs:write:*'] };
    const effective = narrow(crew, agent);
    expect(effective).toEqual({ allow: ['fs:read', 'net:api.example.com'], ask: ['fs:write:*'], deny: [] });
    expect(decide(effective, ['shell']).decision).toBe('deny'); // the crew does not cover it
    expect(decide(effective, ['fs:write']).decision).toBe('deny'); // the agent does not cover it
    expect(decide(effective, ['fs:write:/tmp']).decision).toBe('ask');
    expect(decide(effective, ['net:other.example']).decision).toBe('deny');
  });

  it('keeps every deny of both sides', () => {
    expect(narrow({ allow: ['*'], deny: ['net:*'] }, { allow: ['*'], deny: ['shell'] })).toEqual({ allow: ['*'], ask: [], deny: ['net:*', 'shell'] });
  });

  it('is the identity with an allow-everything policy', () => {
    const agent: Policy = { allow: ['fs:read'], ask: ['net:*'], deny: ['net:evil'] };
    const effective = narrow({ allow: ['*'] }, agent);
    expect(isNarrowerOrEqual(effective, agent) && isNarrowerOrEqual(agent, effective)).toBe(true);
  });
});

describe('isNarrowerOrEqual', () => {
  it('accepts equal and narrower policies and names the scope a wider one opens', () => {
    const base: Policy = { allow: ['fs:*'], ask: ['fs:write'] };
    expect(isNarrowerOrEqual(base, base)).toBe(true);
    expect(isNarrowerOrEqual({ allow: ['fs:read'] }, base)).toBe(true);
    expect(isNarrowerOrEqual({ allow: ['fs:*'], deny: ['fs:write'] }, base)).toBe(true);
    expect(isNarrowerOrEqual({ allow: ['fs:*'] }, base)).toBe(false); // fs:write no longer asks
    expect(findWidening({ allow: ['fs:*'] }, base)).toEqual({ scope: 'fs:write', a: 'allow', b: 'ask' });
    expect(findWidening({ allow: ['*'] }, base)).toEqual({ scope: '<any>', a: 'allow', b: 'deny' });
    expect(findWidening({ allow: ['fs:*', 'net:*'] }, base)).toEqual({ scope: 'net:<any>', a: 'allow', b: 'deny' });
  });

  it('agrees with a brute-force comparison over every scope (500 random pairs)', () => {
    const rand = seededRandom(11);
    const outcomes = new Set<boolean>();
    for (let n = 0; n < 500; n++) {
      const a = randomPolicy(rand);
      const b = randomPolicy(rand);
      const brute = ALL_SCOPES.every((s) => RANK[decide(a, [s]).decision] >= RANK[decide(b, [s]).decision]);
      expect(isNarrowerOrEqual(a, b), JSON.stringify({ a, b })).toBe(brute);
      outcomes.add(brute);
    }
    expect([...outcomes].sort()).toEqual([false, true]); // the sample exercises both answers
  });
});
