import { z } from 'zod';
import { ErrorCode, TroupeError } from '../core/errors.js';

/**
 * A validator for the part of JSON Schema that tool input schemas use, so a tool described by
 * someone else's JSON Schema (an MCP server's) checks its arguments exactly as that schema
 * says. Anything outside the subset is refused when the schema is compiled, never silently
 * ignored: a keyword skipped here would let through arguments the schema forbids.
 *
 * Why not `z.fromJSONSchema` (zod 4.6): it is documented as semi-experimental and, tried on
 * this version, accepts `{}` for `{ type: 'object', required: ['a'] }`, accepts anything for a
 * schema with `properties` but no `type`, ignores `type` next to `enum`, rejects an object
 * `const` equal to the value, fills `default`s into the arguments, asserts `format`s (an
 * annotation by default in 2020-12) and keeps unknown keywords as metadata instead of
 * refusing them. Why not the SDK's Ajv: it is configured with `strict: false`, so unknown
 * keywords (and 2020-12 keywords such as `prefixItems`, unknown to its draft-07 Ajv) pass
 * unnoticed, and it would tie the validation to an optional dependency.
 *
 * Supported: `type` (one or a list), `enum`, `const`, `properties`, `required`,
 * `additionalProperties`, `patternProperties`, `propertyNames`, `minProperties`,
 * `maxProperties`, `dependentRequired`, `dependentSchemas` (2019-09+), `dependencies`
 * (up to draft-07), `items`, `prefixItems` (2020-12), tuple `items` and `additionalItems`
 * (up to 2019-09), `minItems`, `maxItems`, `uniqueItems`, `contains` (with `minContains`,
 * `maxContains` from 2019-09), `minLength`, `maxLength` (in code points), `pattern` (with the
 * `u` flag), `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `multipleOf`,
 * `allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else`, and `$ref` to a JSON pointer inside
 * the same document (`#/$defs/x`, `#/definitions/x`, recursion included). Annotations
 * (`title`, `description`, `default`, `examples`, `format`, `deprecated`, `readOnly`,
 * `writeOnly`, `$comment`, `content*`, `x-*`) are ignored, as the spec says; `default` is
 * not filled in, the arguments reach the tool as written.
 *
 * Refused (`SCHEMA_UNSUPPORTED`, `details: { keyword, at }`): `unevaluatedProperties`,
 * `unevaluatedItems`, dynamic and recursive references, `$anchor`, a nested `$id`, references
 * outside the document, a keyword another draft than the schema's own defines (validators
 * disagree about those), a `$ref` with validating siblings in draft-07 or older (where they
 * are ignored by the spec and applied by common validators), an unknown `$schema`, any other
 * keyword, and malformed keyword values.
 */

/** One reason a value does not match its schema. */
export interface SchemaIssue {
  /** Where in the value: property names and array indexes. */
  path: (string | number)[];
  message: string;
}

/** Checks a value; an empty list means it matches. */
export type JsonSchemaValidator = (value: unknown) => SchemaIssue[];

type Draft = 'draft-04' | 'draft-06' | 'draft-07' | '2019-09' | '2020-12';
type Path = (string | number)[];
type Check = (value: unknown, path: Path, issues: SchemaIssue[]) => void;

const DRAFTS: Record<string, Draft> = {
  'http://json-schema.org/draft-04/schema': 'draft-04',
  'http://json-schema.org/draft-06/schema': 'draft-06',
  'http://json-schema.org/draft-07/schema': 'draft-07',
  'https://json-schema.org/draft/2019-09/schema': '2019-09',
  'https://json-schema.org/draft/2020-12/schema': '2020-12',
};
const ORDER: readonly Draft[] = ['draft-04', 'draft-06', 'draft-07', '2019-09', '2020-12'];

/** Validation keywords and the drafts that define them: [first, last]. */
const KEYWORDS: Record<string, readonly [Draft, Draft]> = {
  type: ['draft-04', '2020-12'],
  enum: ['draft-04', '2020-12'],
  const: ['draft-06', '2020-12'],
  properties: ['draft-04', '2020-12'],
  required: ['draft-04', '2020-12'],
  additionalProperties: ['draft-04', '2020-12'],
  patternProperties: ['draft-04', '2020-12'],
  propertyNames: ['draft-06', '2020-12'],
  minProperties: ['draft-04', '2020-12'],
  maxProperties: ['draft-04', '2020-12'],
  dependencies: ['draft-04', 'draft-07'],
  dependentRequired: ['2019-09', '2020-12'],
  dependentSchemas: ['2019-09', '2020-12'],
  items: ['draft-04', '2020-12'],
  prefixItems: ['2020-12', '2020-12'],
  additionalItems: ['draft-04', '2019-09'],
  minItems: ['draft-04', '2020-12'],
  maxItems: ['draft-04', '2020-12'],
  uniqueItems: ['draft-04', '2020-12'],
  contains: ['draft-06', '2020-12'],
  minContains: ['2019-09', '2020-12'],
  maxContains: ['2019-09', '2020-12'],
  minLength: ['draft-04', '2020-12'],
  maxLength: ['draft-04', '2020-12'],
  pattern: ['draft-04', '2020-12'],
  minimum: ['draft-04', '2020-12'],
  maximum: ['draft-04', '2020-12'],
  exclusiveMinimum: ['draft-04', '2020-12'],
  exclusiveMaximum: ['draft-04', '2020-12'],
  multipleOf: ['draft-04', '2020-12'],
  allOf: ['draft-04', '2020-12'],
  anyOf: ['draft-04', '2020-12'],
  oneOf: ['draft-04', '2020-12'],
  not: ['draft-04', '2020-12'],
  if: ['draft-07', '2020-12'],
  then: ['draft-07', '2020-12'],
  else: ['draft-07', '2020-12'],
  $ref: ['draft-04', '2020-12'],
};

/** Keywords that never change whether a value is valid. */
const ANNOTATIONS = new Set([
  'title', 'description', 'default', 'examples', 'format', 'deprecated', 'readOnly', 'writeOnly', '$comment',
  'contentEncoding', 'contentMediaType', 'contentSchema', '$defs', 'definitions',
]);

const TYPES = new Set(['null', 'boolean', 'object', 'array', 'number', 'integer', 'string']);

interface Context {
  root: Record<string, unknown>;
  draft: Draft;
  /** Compiled `$ref` targets by pointer; a cycle is broken by a late-bound indirection. */
  refs: Map<string, Check>;
}

const unsupported = (keyword: string, at: string, why: string) =>
  new TroupeError(ErrorCode.SCHEMA_UNSUPPORTED, `JSON Schema keyword "${keyword}" at #${at}: ${why}`, { details: { keyword, at: `#${at}` } });

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function typeOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

function hasType(value: unknown, type: string): boolean {
  const actual = typeOf(value);
  if (type === 'number') return (actual === 'number' && Number.isFinite(value)) || actual === 'integer';
  return actual === type;
}

/** Equality of JSON values, as `enum`, `const` and `uniqueItems` define it. */
function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && jsonEqual(a[k], b[k]));
  }
  return false;
}

/** Code points, not UTF-16 units: what `minLength`/`maxLength` count. */
function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

const show = (v: unknown) => JSON.stringify(v);

/** Pointer segment escaping (RFC 6901). */
const escape = (s: string | number) => String(s).replaceAll('~', '~0').replaceAll('/', '~1');

function regex(pattern: unknown, keyword: string, at: string): RegExp {
  if (typeof pattern !== 'string') throw unsupported(keyword, at, 'must be a string');
  // JSON Schema regexes are ECMA-262 with Unicode semantics; a pattern written for the
  // legacy syntax (as zod emits some) still compiles without the flag.
  try {
    return new RegExp(pattern, 'u');
  } catch {
    try {
      return new RegExp(pattern);
    } catch {
      throw unsupported(keyword, at, `${show(pattern)} is not a valid regular expression`);
    }
  }
}

function count(value: unknown, keyword: string, at: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) throw unsupported(keyword, at, 'must be a non-negative integer');
  return value;
}

function number(value: unknown, keyword: string, at: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw unsupported(keyword, at, 'must be a number');
  return value;
}

function stringList(value: unknown, keyword: string, at: string): string[] {
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw unsupported(keyword, at, 'must be an array of strings');
  return value as string[];
}

function schemaList(value: unknown, keyword: string, at: string, ctx: Context): Check[] {
  if (!Array.isArray(value) || value.length === 0) throw unsupported(keyword, at, 'must be a non-empty array of schemas');
  return value.map((s, i) => compile(s, `${at}/${keyword}/${i}`, ctx));
}

function schemaMap(value: unknown, keyword: string, at: string, ctx: Context): Map<string, Check> {
  if (!isObject(value)) throw unsupported(keyword, at, 'must be an object of schemas');
  return new Map(Object.entries(value).map(([k, s]) => [k, compile(s, `${at}/${keyword}/${escape(k)}`, ctx)]));
}

/** Whether a value passes, without collecting where it fails (for `anyOf`, `if`, `contains`). */
const passes = (check: Check, value: unknown, path: Path) => {
  const issues: SchemaIssue[] = [];
  check(value, path, issues);
  return issues.length === 0;
};

function resolvePointer(ref: string, at: string, ctx: Context): { schema: unknown; pointer: string } {
  if (ref !== '#' && !ref.startsWith('#/')) throw unsupported('$ref', at, `only references inside the document ("#/…") are supported, not ${show(ref)}`);
  let node: unknown = ctx.root;
  const segments = ref === '#' ? [] : ref.slice(2).split('/');
  for (const raw of segments) {
    const segment = decodeURIComponent(raw).replaceAll('~1', '/').replaceAll('~0', '~');
    if (Array.isArray(node) && /^\d+$/.test(segment)) node = node[Number(segment)];
    else if (isObject(node) && Object.hasOwn(node, segment)) node = node[segment];
    else throw unsupported('$ref', at, `${show(ref)} points at nothing`);
  }
  return { schema: node, pointer: ref.slice(1) };
}

function compileRef(ref: unknown, at: string, ctx: Context): Check {
  if (typeof ref !== 'string') throw unsupported('$ref', at, 'must be a string');
  const { schema, pointer } = resolvePointer(ref, at, ctx);
  const known = ctx.refs.get(pointer);
  if (known) return known;
  // Registered before compiling, so a schema that refers to itself finds this indirection.
  let target: Check | undefined;
  const late: Check = (value, path, issues) => target!(value, path, issues);
  ctx.refs.set(pointer, late);
  target = compile(schema, pointer, ctx);
  return late;
}

function compile(schema: unknown, at: string, ctx: Context): Check {
  if (schema === true) return () => {};
  if (schema === false) return (_v, path, issues) => void issues.push({ path, message: 'no value is allowed here' });
  if (!isObject(schema)) throw unsupported('(schema)', at, 'a schema must be an object or a boolean');

  const checks: Check[] = [];
  const draftIndex = ORDER.indexOf(ctx.draft);
  const validating = Object.keys(schema).filter((k) => !ANNOTATIONS.has(k) && !k.startsWith('x-') && !(at === '' && (k === '$schema' || k === '$id')));
  for (const keyword of validating) {
    const span = KEYWORDS[keyword];
    if (!span) {
      const why = ['unevaluatedProperties', 'unevaluatedItems', '$dynamicRef', '$dynamicAnchor', '$recursiveRef', '$recursiveAnchor', '$anchor', '$id', '$schema', '$vocabulary'].includes(keyword)
        ? 'not supported by this validator'
        : 'unknown keyword; it may constrain values in ways this validator cannot check';
      throw unsupported(keyword, at, why);
    }
    if (draftIndex < ORDER.indexOf(span[0]) || draftIndex > ORDER.indexOf(span[1])) {
      throw unsupported(keyword, at, `not a ${ctx.draft} keyword; validators disagree on what it means there`);
    }
  }
  if ('$ref' in schema) {
    const siblings = validating.filter((k) => k !== '$ref');
    if (siblings.length > 0 && draftIndex <= ORDER.indexOf('draft-07')) {
      throw unsupported('$ref', at, `in ${ctx.draft} the siblings of $ref (${siblings.join(', ')}) are ignored by the spec but applied by common validators`);
    }
    checks.push(compileRef(schema.$ref, at, ctx));
  }

  if ('type' in schema) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (types.length === 0 || !types.every((t) => typeof t === 'string' && TYPES.has(t))) throw unsupported('type', at, `must be one of ${[...TYPES].join(', ')} or a list of them`);
    checks.push((value, path, issues) => {
      if (!types.some((t) => hasType(value, t as string))) issues.push({ path, message: `must be ${types.join(' or ')}` });
    });
  }
  if ('enum' in schema) {
    const values = schema.enum;
    if (!Array.isArray(values) || values.length === 0) throw unsupported('enum', at, 'must be a non-empty array');
    checks.push((value, path, issues) => {
      if (!values.some((v) => jsonEqual(v, value))) issues.push({ path, message: `must be one of ${values.map(show).join(', ')}` });
    });
  }
  if ('const' in schema) {
    const expected = schema.const;
    checks.push((value, path, issues) => {
      if (!jsonEqual(expected, value)) issues.push({ path, message: `must be ${show(expected)}` });
    });
  }

  checks.push(...compileString(schema, at), ...compileNumber(schema, at, ctx), ...compileObject(schema, at, ctx), ...compileArray(schema, at, ctx));

  if ('allOf' in schema) {
    const all = schemaList(schema.allOf, 'allOf', at, ctx);
    checks.push((value, path, issues) => all.forEach((c) => c(value, path, issues)));
  }
  if ('anyOf' in schema) {
    const any = schemaList(schema.anyOf, 'anyOf', at, ctx);
    checks.push((value, path, issues) => {
      const failures: SchemaIssue[][] = [];
      for (const c of any) {
        const own: SchemaIssue[] = [];
        c(value, path, own);
        if (own.length === 0) return;
        failures.push(own);
      }
      issues.push({ path, message: `must match at least one of ${any.length} alternatives (${failures.map((f) => f[0]!.message).join(' | ')})` });
    });
  }
  if ('oneOf' in schema) {
    const one = schemaList(schema.oneOf, 'oneOf', at, ctx);
    checks.push((value, path, issues) => {
      const matched = one.filter((c) => passes(c, value, path)).length;
      if (matched !== 1) issues.push({ path, message: `must match exactly one of ${one.length} alternatives (matches ${matched})` });
    });
  }
  if ('not' in schema) {
    const not = compile(schema.not, `${at}/not`, ctx);
    checks.push((value, path, issues) => {
      if (passes(not, value, path)) issues.push({ path, message: 'must not match the schema in "not"' });
    });
  }
  if ('if' in schema) {
    const cond = compile(schema.if, `${at}/if`, ctx);
    const then = 'then' in schema ? compile(schema.then, `${at}/then`, ctx) : undefined;
    const otherwise = 'else' in schema ? compile(schema.else, `${at}/else`, ctx) : undefined;
    checks.push((value, path, issues) => (passes(cond, value, path) ? then : otherwise)?.(value, path, issues));
  }

  return (value, path, issues) => {
    for (const c of checks) c(value, path, issues);
  };
}

function compileString(schema: Record<string, unknown>, at: string): Check[] {
  const out: Check[] = [];
  const onString = (check: (s: string, path: Path, issues: SchemaIssue[]) => void): Check => (v, path, issues) => {
    if (typeof v === 'string') check(v, path, issues);
  };
  if ('minLength' in schema) {
    const min = count(schema.minLength, 'minLength', at);
    out.push(onString((s, path, issues) => void (codePoints(s) < min && issues.push({ path, message: `must have at least ${min} characters` }))));
  }
  if ('maxLength' in schema) {
    const max = count(schema.maxLength, 'maxLength', at);
    out.push(onString((s, path, issues) => void (codePoints(s) > max && issues.push({ path, message: `must have at most ${max} characters` }))));
  }
  if ('pattern' in schema) {
    const re = regex(schema.pattern, 'pattern', at);
    out.push(onString((s, path, issues) => void (!re.test(s) && issues.push({ path, message: `must match the pattern ${show(schema.pattern)}` }))));
  }
  return out;
}

function compileNumber(schema: Record<string, unknown>, at: string, ctx: Context): Check[] {
  const out: Check[] = [];
  const onNumber = (check: (n: number) => string | undefined): Check => (v, path, issues) => {
    if (typeof v !== 'number') return;
    const problem = check(v);
    if (problem) issues.push({ path, message: problem });
  };
  // Draft-04 spells an exclusive bound as a boolean next to minimum/maximum; later drafts as a number.
  const bound = (limit: 'minimum' | 'maximum', exclusive: 'exclusiveMinimum' | 'exclusiveMaximum', below: boolean) => {
    const flag = schema[exclusive];
    if (ctx.draft === 'draft-04' && exclusive in schema && typeof flag !== 'boolean') throw unsupported(exclusive, at, 'must be a boolean in draft-04');
    if (ctx.draft !== 'draft-04' && exclusive in schema) {
      const x = number(flag, exclusive, at);
      out.push(onNumber((n) => ((below ? n <= x : n >= x) ? `must be ${below ? '>' : '<'} ${x}` : undefined)));
    }
    if (limit in schema) {
      const x = number(schema[limit], limit, at);
      const strict = ctx.draft === 'draft-04' && flag === true;
      out.push(onNumber((n) => ((below ? (strict ? n <= x : n < x) : strict ? n >= x : n > x) ? `must be ${below ? '>' : '<'}${strict ? '' : '='} ${x}` : undefined)));
    }
  };
  bound('minimum', 'exclusiveMinimum', true);
  bound('maximum', 'exclusiveMaximum', false);
  if ('multipleOf' in schema) {
    const m = number(schema.multipleOf, 'multipleOf', at);
    if (m <= 0) throw unsupported('multipleOf', at, 'must be greater than 0');
    out.push(onNumber((n) => {
      const q = n / m;
      // Tolerates the binary rounding of decimal steps (0.3 is a multiple of 0.1).
      return Number.isInteger(q) || Math.abs(q - Math.round(q)) < 1e-9 ? undefined : `must be a multiple of ${m}`;
    }));
  }
  return out;
}

function compileObject(schema: Record<string, unknown>, at: string, ctx: Context): Check[] {
  const out: Check[] = [];
  const onObject = (check: (o: Record<string, unknown>, path: Path, issues: SchemaIssue[]) => void): Check => (v, path, issues) => {
    if (isObject(v)) check(v, path, issues);
  };
  const properties = 'properties' in schema ? schemaMap(schema.properties, 'properties', at, ctx) : new Map<string, Check>();
  const patterns = 'patternProperties' in schema
    ? [...schemaMap(schema.patternProperties, 'patternProperties', at, ctx)].map(([p, c]) => [regex(p, 'patternProperties', at), c] as const)
    : [];
  const additional = 'additionalProperties' in schema ? compile(schema.additionalProperties, `${at}/additionalProperties`, ctx) : undefined;
  if (properties.size > 0 || patterns.length > 0 || additional) {
    out.push(onObject((o, path, issues) => {
      for (const [key, value] of Object.entries(o)) {
        const own = properties.get(key);
        own?.(value, [...path, key], issues);
        let matched = own !== undefined;
        for (const [re, c] of patterns) {
          if (re.test(key)) {
            matched = true;
            c(value, [...path, key], issues);
          }
        }
        if (!matched && additional) {
          const before = issues.length;
          additional(value, [...path, key], issues);
          // `additionalProperties: false` reads better as "not allowed" than "no value is allowed".
          if (schema.additionalProperties === false && issues.length > before) issues.splice(before, issues.length - before, { path: [...path, key], message: 'is not an allowed property' });
        }
      }
    }));
  }
  if ('required' in schema) {
    const required = stringList(schema.required, 'required', at);
    out.push(onObject((o, path, issues) => {
      for (const key of required) if (!Object.hasOwn(o, key)) issues.push({ path: [...path, key], message: 'is required' });
    }));
  }
  if ('propertyNames' in schema) {
    const names = compile(schema.propertyNames, `${at}/propertyNames`, ctx);
    out.push(onObject((o, path, issues) => {
      for (const key of Object.keys(o)) if (!passes(names, key, path)) issues.push({ path: [...path, key], message: 'is not an allowed property name' });
    }));
  }
  if ('minProperties' in schema) {
    const min = count(schema.minProperties, 'minProperties', at);
    out.push(onObject((o, path, issues) => void (Object.keys(o).length < min && issues.push({ path, message: `must have at least ${min} properties` }))));
  }
  if ('maxProperties' in schema) {
    const max = count(schema.maxProperties, 'maxProperties', at);
    out.push(onObject((o, path, issues) => void (Object.keys(o).length > max && issues.push({ path, message: `must have at most ${max} properties` }))));
  }
  // `dependencies` (up to draft-07) holds both forms that 2019-09 split in two.
  const dependencies = (keyword: 'dependencies' | 'dependentRequired' | 'dependentSchemas') => {
    if (!(keyword in schema)) return;
    const map = schema[keyword];
    if (!isObject(map)) throw unsupported(keyword, at, 'must be an object');
    for (const [key, dep] of Object.entries(map)) {
      if (Array.isArray(dep) && keyword !== 'dependentSchemas') {
        const needed = stringList(dep, keyword, at);
        out.push(onObject((o, path, issues) => {
          if (Object.hasOwn(o, key)) for (const n of needed) if (!Object.hasOwn(o, n)) issues.push({ path: [...path, n], message: `is required when "${key}" is present` });
        }));
      } else if (keyword !== 'dependentRequired') {
        const c = compile(dep, `${at}/${keyword}/${escape(key)}`, ctx);
        out.push(onObject((o, path, issues) => void (Object.hasOwn(o, key) && c(o, path, issues))));
      } else throw unsupported(keyword, at, 'values must be arrays of property names');
    }
  };
  dependencies('dependencies');
  dependencies('dependentRequired');
  dependencies('dependentSchemas');
  return out;
}

function compileArray(schema: Record<string, unknown>, at: string, ctx: Context): Check[] {
  const out: Check[] = [];
  const onArray = (check: (a: unknown[], path: Path, issues: SchemaIssue[]) => void): Check => (v, path, issues) => {
    if (Array.isArray(v)) check(v, path, issues);
  };
  // Positional schemas: `prefixItems` in 2020-12, an `items` array before it.
  let positional: Check[] = [];
  let rest: Check | undefined;
  if (Array.isArray(schema.items)) {
    if (ctx.draft === '2020-12') throw unsupported('items', at, 'an array of schemas is prefixItems in 2020-12');
    positional = schema.items.map((s, i) => compile(s, `${at}/items/${i}`, ctx));
    if ('additionalItems' in schema) rest = compile(schema.additionalItems, `${at}/additionalItems`, ctx);
  } else {
    if ('prefixItems' in schema) {
      if (!Array.isArray(schema.prefixItems)) throw unsupported('prefixItems', at, 'must be an array of schemas');
      positional = schema.prefixItems.map((s, i) => compile(s, `${at}/prefixItems/${i}`, ctx));
    }
    if ('items' in schema) rest = compile(schema.items, `${at}/items`, ctx);
    // Without an items array, additionalItems constrains nothing (the spec says so).
  }
  if (positional.length > 0 || rest) {
    out.push(onArray((a, path, issues) => {
      a.forEach((item, i) => (i < positional.length ? positional[i] : rest)?.(item, [...path, i], issues));
    }));
  }
  if ('minItems' in schema) {
    const min = count(schema.minItems, 'minItems', at);
    out.push(onArray((a, path, issues) => void (a.length < min && issues.push({ path, message: `must have at least ${min} items` }))));
  }
  if ('maxItems' in schema) {
    const max = count(schema.maxItems, 'maxItems', at);
    out.push(onArray((a, path, issues) => void (a.length > max && issues.push({ path, message: `must have at most ${max} items` }))));
  }
  if ('uniqueItems' in schema) {
    if (typeof schema.uniqueItems !== 'boolean') throw unsupported('uniqueItems', at, 'must be a boolean');
    if (schema.uniqueItems) {
      out.push(onArray((a, path, issues) => {
        for (let i = 1; i < a.length; i++) {
          const j = a.findIndex((x, k) => k < i && jsonEqual(x, a[i]));
          if (j >= 0) issues.push({ path: [...path, i], message: `duplicates item ${j}; items must be unique` });
        }
      }));
    }
  }
  if ('contains' in schema) {
    const c = compile(schema.contains, `${at}/contains`, ctx);
    const min = 'minContains' in schema ? count(schema.minContains, 'minContains', at) : 1;
    const max = 'maxContains' in schema ? count(schema.maxContains, 'maxContains', at) : Infinity;
    out.push(onArray((a, path, issues) => {
      const n = a.filter((item, i) => passes(c, item, [...path, i])).length;
      if (n < min) issues.push({ path, message: `must contain at least ${min} matching item${min === 1 ? '' : 's'} (has ${n})` });
      if (n > max) issues.push({ path, message: `must contain at most ${max} matching items (has ${n})` });
    }));
  }
  return out;
}

/**
 * Compiles a JSON Schema into a validator. Throws a `TroupeError` `SCHEMA_UNSUPPORTED`
 * naming the keyword and where it is (`details: { keyword, at }`) for anything this
 * validator cannot check exactly as the schema means it (see the module comment).
 *
 * @example
 * const check = compileJsonSchema({ type: 'object', properties: { q: { type: 'string' } }, required: ['q'] });
 * check({}); // [{ path: ['q'], message: 'is required' }]
 */
export function compileJsonSchema(schema: unknown): JsonSchemaValidator {
  let root: Record<string, unknown>;
  try {
    // A JSON round trip: the schema came over the wire and must be plain, acyclic data.
    root = JSON.parse(JSON.stringify(schema)) as Record<string, unknown>;
  } catch {
    throw unsupported('(schema)', '', 'the schema is not JSON');
  }
  if (typeof root === 'boolean') root = root ? {} : { not: {} };
  if (!isObject(root)) throw unsupported('(schema)', '', 'a schema must be an object or a boolean');
  let draft: Draft = '2020-12'; // MCP's default dialect when a schema names none
  if ('$schema' in root) {
    const uri = typeof root.$schema === 'string' ? root.$schema.replace(/#$/, '').replace(/^https:\/\/json-schema\.org\/draft-0/, 'http://json-schema.org/draft-0') : '';
    const known = DRAFTS[uri];
    if (!known) throw unsupported('$schema', '', `unknown dialect ${show(root.$schema)}`);
    draft = known;
  }
  const ctx: Context = { root, draft, refs: new Map() };
  // `$ref: '#'` (a recursive root) finds this indirection instead of compiling the root again.
  let check: Check | undefined;
  ctx.refs.set('', (value, path, issues) => check!(value, path, issues));
  check = compile(root, '', ctx);
  return (value) => {
    const issues: SchemaIssue[] = [];
    check(value, [], issues);
    return issues;
  };
}

/**
 * A zod schema that validates with {@link compileJsonSchema}: for a tool whose arguments are
 * described by a JSON Schema. Its issues keep the validator's paths and messages; it passes
 * the value through unchanged. Throws like {@link compileJsonSchema}.
 */
export function jsonSchemaToZod(schema: unknown): z.ZodType<unknown> {
  const check = compileJsonSchema(schema);
  return z.unknown().superRefine((value, ctx) => {
    for (const issue of check(value)) ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path });
  });
}
