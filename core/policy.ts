import { z } from 'zod';

/**
 * Tool permissions. A tool declares the scopes it needs (`fs:read`, `net:api.example.com`);
 * an agent runs under a {@link Policy} of scope patterns that allow, ask (a human approves
 * each call) or deny them. Scopes are `:`-separated segments; a pattern is a scope, `*`, or
 * a scope prefix followed by `:*`, which matches every scope with at least one more segment
 * (`fs:*` matches `fs:read` and `fs:read:/tmp`, not `fs`). Because `*` may only be a whole
 * last segment, two patterns are always either nested or disjoint, which is what makes
 * {@link narrow} exact rather than approximate.
 */

/** What a policy says about a call. Ordered by strictness: deny > ask > allow. */
export type Decision = 'allow' | 'ask' | 'deny';

/** Scope patterns per decision. A scope no pattern matches is denied (default-deny). */
export interface Policy {
  readonly allow?: readonly string[];
  readonly ask?: readonly string[];
  readonly deny?: readonly string[];
}

/** The outcome of {@link decide}. */
export interface PolicyDecision {
  decision: Decision;
  /** The scope that decided (the first denied, else the first asked); absent on allow. */
  scope?: string;
  /** The pattern that matched `scope`; absent when no pattern covers it (default-deny). */
  rule?: string;
}

const SEGMENT = /^[^\s:*\p{Cc}]+$/u;
const MAX_SCOPE_LENGTH = 512;
const RANK: Record<Decision, number> = { allow: 0, ask: 1, deny: 2 };

function scopeProblem(value: string, asPattern: boolean): string | undefined {
  if (value.length === 0 || value.length > MAX_SCOPE_LENGTH) return `must be 1 to ${MAX_SCOPE_LENGTH} characters`;
  if (asPattern && value === '*') return undefined;
  const segments = value.split(':');
  for (const [i, segment] of segments.entries()) {
    if (asPattern && segment === '*' && i === segments.length - 1 && i > 0) continue;
    if (segment.includes('*')) return asPattern ? `"*" may only be a whole last segment (fs:* or *)` : 'a scope may not contain "*" (only patterns may)';
    if (!SEGMENT.test(segment)) return 'segments must be non-empty, without whitespace or control characters';
  }
  return undefined;
}

const Pattern = z.string().superRefine((value, ctx) => {
  const problem = scopeProblem(value, true);
  if (problem) ctx.addIssue({ code: 'custom', message: `pattern "${value}": ${problem}` });
});

/** zod schema of a {@link Policy}; {@link definePolicy} turns its failures into a `TypeError`. */
export const PolicySchema = z.strictObject({
  allow: z.array(Pattern).optional(),
  ask: z.array(Pattern).optional(),
  deny: z.array(Pattern).optional(),
});

const validated = new WeakSet<object>();

/**
 * Validates a policy and returns a frozen copy. Throws a `TypeError` naming every broken
 * rule. The other functions accept unvalidated policies too and validate them once.
 */
export function definePolicy(input: Policy): Policy {
  const parsed = PolicySchema.safeParse(input);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => (i.code === 'custom' ? i.message : `${i.path.join('.') || '(policy)'}: ${i.message}`));
    throw new TypeError(`invalid policy: ${issues.join('; ')} (lists allow/ask/deny of patterns like "fs:read", "fs:*", "*")`);
  }
  const policy: Policy = Object.freeze({
    ...(parsed.data.allow ? { allow: Object.freeze([...parsed.data.allow]) } : {}),
    ...(parsed.data.ask ? { ask: Object.freeze([...parsed.data.ask]) } : {}),
    ...(parsed.data.deny ? { deny: Object.freeze([...parsed.data.deny]) } : {}),
  });
  validated.add(policy);
  return policy;
}

function checked(policy: Policy): Policy {
  return validated.has(policy) ? policy : definePolicy(policy);
}

/** Whether every scope `inner` matches is matched by `outer` (both patterns or scopes). */
function covers(outer: string, inner: string): boolean {
  if (outer === '*' || outer === inner) return true;
  if (!outer.endsWith(':*')) return false;
  const prefix = outer.slice(0, -1); // keeps the ':' so `fs:*` never matches `fsx:read`
  return inner.startsWith(prefix) && inner.length > prefix.length;
}

/** Throws a `TypeError` unless `scope` is a valid concrete scope (for `tool({ scopes })`). */
export function assertScope(scope: string): void {
  const problem = typeof scope === 'string' ? scopeProblem(scope, false) : 'must be a string';
  if (problem) throw new TypeError(`scope "${String(scope)}": ${problem}`);
}

/** Whether `pattern` matches the concrete `scope`. */
export function matches(pattern: string, scope: string): boolean {
  return covers(pattern, scope);
}

function decideOne(policy: Policy, scope: string): PolicyDecision {
  for (const decision of ['deny', 'ask', 'allow'] as const) {
    const rule = policy[decision]?.find((p) => covers(p, scope));
    if (rule !== undefined) return { decision, scope, rule };
  }
  return { decision: 'deny', scope };
}

/**
 * Decides a call of a tool that needs all of `scopes`: deny wins over ask over allow, a
 * scope no pattern matches is denied, and a tool without scopes is allowed.
 */
export function decide(policy: Policy, scopes: readonly string[]): PolicyDecision {
  const p = checked(policy);
  let worst: PolicyDecision = { decision: 'allow' };
  for (const scope of scopes) {
    assertScope(scope);
    const one = decideOne(p, scope);
    if (RANK[one.decision] > RANK[worst.decision]) worst = one;
    if (worst.decision === 'deny') break;
  }
  return worst;
}

/** A one-line human account of a decision, for refusals sent to the model and audit. */
export function describeDecision(d: PolicyDecision): string {
  if (d.decision === 'allow') return 'allowed';
  const verb = d.decision === 'deny' ? 'denied' : 'needs approval';
  if (d.rule === undefined) return `scope "${d.scope}" is denied: no rule of the policy covers it`;
  return `scope "${d.scope}" ${verb} by rule "${d.rule}"`;
}

/** The more specific of two patterns when one contains the other; `undefined` when disjoint. */
function intersect(a: string, b: string): string | undefined {
  if (covers(a, b)) return b;
  if (covers(b, a)) return a;
  return undefined;
}

function intersectAll(as: readonly string[], bs: readonly string[]): string[] {
  const out: string[] = [];
  for (const a of as) for (const b of bs) {
    const both = intersect(a, b);
    if (both !== undefined) out.push(both);
  }
  return simplify(out);
}

/** Drops duplicates and patterns another pattern of the list already covers. */
function simplify(patterns: readonly string[]): string[] {
  const unique = [...new Set(patterns)];
  return unique.filter((p) => !unique.some((q) => q !== p && covers(q, p))).sort();
}

/**
 * The effective policy of `inner` running inside `outer` (a crew narrowing an agent, a
 * handoff passing a policy on). For every scope it decides the stricter of the two: denied
 * if either denies it or either does not cover it; asked if either asks and neither denies;
 * allowed only if both allow. So the result never allows more than either input.
 */
export function narrow(outer: Policy, inner: Policy): Policy {
  const o = checked(outer);
  const i = checked(inner);
  const coverO = [...(o.allow ?? []), ...(o.ask ?? [])];
  const coverI = [...(i.allow ?? []), ...(i.ask ?? [])];
  return definePolicy({
    allow: intersectAll(o.allow ?? [], i.allow ?? []),
    ask: simplify([...intersectAll(o.ask ?? [], coverI), ...intersectAll(i.ask ?? [], coverO)]),
    deny: simplify([...(o.deny ?? []), ...(i.deny ?? [])]),
  });
}

// Contains characters a real scope segment cannot, so it matches no exact pattern.
const FRESH = '\u0000fresh';

/**
 * Scopes that exercise every distinct decision of the given policies: a decision depends
 * only on which patterns match, and these hit every combination any scope can produce.
 */
function representatives(...policies: Policy[]): string[] {
  const out = new Set<string>([FRESH]);
  for (const p of policies) {
    for (const pattern of [...(p.allow ?? []), ...(p.ask ?? []), ...(p.deny ?? [])]) {
      if (pattern === '*') continue;
      out.add(pattern.endsWith(':*') ? `${pattern.slice(0, -1)}${FRESH}` : pattern);
    }
  }
  return [...out];
}

/**
 * The first scope on which `a` is more permissive than `b`, with both decisions; `undefined`
 * when `a` is narrower than or equal to `b` everywhere.
 */
export function findWidening(a: Policy, b: Policy): { scope: string; a: Decision; b: Decision } | undefined {
  const pa = checked(a);
  const pb = checked(b);
  for (const scope of representatives(pa, pb)) {
    const da = decideOne(pa, scope).decision;
    const db = decideOne(pb, scope).decision;
    if (RANK[da] < RANK[db]) return { scope: scope.replace(FRESH, '<any>'), a: da, b: db };
  }
  return undefined;
}

/** Whether `a` decides every scope at least as strictly as `b` (a handoff may only narrow). */
export function isNarrowerOrEqual(a: Policy, b: Policy): boolean {
  return findWidening(a, b) === undefined;
}
