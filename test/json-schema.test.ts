import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { compileJsonSchema, jsonSchemaToZod } from '../tools/json-schema.js';

/** Issues as `path: message` lines, for compact expectations. */
const check = (schema: unknown, value: unknown) => compileJsonSchema(schema)(value).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
const valid = (schema: unknown, value: unknown) => check(schema, value).length === 0;

describe('compileJsonSchema: the supported subset, checked as the spec says', () => {
  it('types, including integer vs number, null, and lists of types', () => {
    expect(valid({ type: 'integer' }, 3)).toBe(true);
    expect(valid({ type: 'integer' }, 3.5)).toBe(false);
    expect(valid({ type: 'number' }, 3)).toBe(true);
    expect(valid({ type: ['string', 'null'] }, null)).toBe(true);
    expect(check({ type: ['string', 'null'] }, 1)).toEqual(['(root): must be string or null']);
    expect(valid({ type: 'object' }, [])).toBe(false);
    expect(valid({ type: 'array' }, {})).toBe(false);
  });

  it('objects: required even without properties, additionalProperties, patternProperties, propertyNames, sizes, dependencies', () => {
    expect(check({ type: 'object', required: ['a'] }, {})).toEqual(['a: is required']);
    const closed = { type: 'object', properties: { a: { type: 'string' } }, additionalProperties: false };
    expect(check(closed, { a: 'x', b: 1 })).toEqual(['b: is not an allowed property']);
    expect(check({ type: 'object', additionalProperties: { type: 'number' } }, { a: 1, b: 'x' })).toEqual(['b: must be number']);
    const patterned = { type: 'object', patternProperties: { '^x-': { type: 'string' } }, additionalProperties: false };
    expect(check(patterned, { 'x-a': 'ok', 'x-b': 1, y: 1 })).toEqual(['x-b: must be string', 'y: is not an allowed property']);
    expect(check({ type: 'object', propertyNames: { pattern: '^[a-z]+$' } }, { ok: 1, NO: 2 })).toEqual(['NO: is not an allowed property name']);
    expect(check({ type: 'object', minProperties: 1, maxProperties: 1 }, {})).toEqual(['(root): must have at least 1 properties']);
    expect(check({ dependentRequired: { card: ['cvv'] } }, { card: '4111' })).toEqual(['cvv: is required when "card" is present']);
    expect(check({ $schema: 'http://json-schema.org/draft-07/schema#', dependencies: { a: { required: ['b'] } } }, { a: 1 })).toEqual(['b: is required']);
  });

  it('applies object keywords to objects only, even without a type (as the spec says)', () => {
    const schema = { properties: { a: { type: 'string' } }, required: ['a'] };
    expect(valid(schema, 'not an object')).toBe(true);
    expect(check(schema, { a: 1 })).toEqual(['a: must be string']);
  });

  it('strings: lengths in code points, patterns with Unicode semantics, formats as annotations', () => {
    expect(valid({ type: 'string', maxLength: 2 }, '😀😀')).toBe(true);
    expect(valid({ type: 'string', maxLength: 1 }, '😀😀')).toBe(false);
    expect(valid({ type: 'string', pattern: '^.$' }, '😀')).toBe(true);
    expect(valid({ type: 'string', pattern: 'b' }, 'abc')).toBe(true); // not anchored
    expect(valid({ type: 'string', format: 'email' }, 'not an email')).toBe(true);
  });

  it('numbers: bounds (draft-04 booleans and later numbers), multipleOf with decimal steps', () => {
    expect(check({ type: 'number', minimum: 1, exclusiveMaximum: 5 }, 5)).toEqual(['(root): must be < 5']);
    expect(check({ type: 'number', minimum: 1 }, 0)).toEqual(['(root): must be >= 1']);
    expect(valid({ $schema: 'http://json-schema.org/draft-04/schema#', type: 'number', minimum: 1, exclusiveMinimum: true }, 1)).toBe(false);
    expect(valid({ type: 'number', multipleOf: 0.1 }, 0.3)).toBe(true);
    expect(valid({ type: 'number', multipleOf: 0.1 }, 0.35)).toBe(false);
  });

  it('arrays: items, prefixItems (2020-12), tuple items (draft-07), sizes, uniqueItems by value, contains', () => {
    expect(check({ type: 'array', items: { type: 'string' } }, ['a', 1])).toEqual(['1: must be string']);
    expect(check({ prefixItems: [{ type: 'string' }], items: false }, ['a', 'b'])).toEqual(['1: no value is allowed here']);
    expect(check({ $schema: 'http://json-schema.org/draft-07/schema#', items: [{ type: 'string' }], additionalItems: false }, ['a', 'b'])).toEqual(['1: no value is allowed here']);
    expect(check({ type: 'array', uniqueItems: true }, [{ a: 1, b: 2 }, { b: 2, a: 1 }])).toEqual(['1: duplicates item 0; items must be unique']);
    expect(check({ type: 'array', minItems: 2 }, [1])).toEqual(['(root): must have at least 2 items']);
    expect(valid({ contains: { const: 3 }, minContains: 2 }, [3, 1, 3])).toBe(true);
    expect(valid({ contains: { const: 3 }, maxContains: 1 }, [3, 3])).toBe(false);
  });

  it('enum and const compare JSON values deeply, and stay independent of type', () => {
    expect(valid({ const: { a: [1, 2] } }, { a: [1, 2] })).toBe(true);
    expect(valid({ enum: [{ a: 1 }, 'x'] }, { a: 1 })).toBe(true);
    expect(check({ type: 'string', enum: ['a', 1] }, 1)).toEqual(['(root): must be string']);
  });

  it('composition: allOf, anyOf, oneOf exactly one, not, if/then/else', () => {
    const oneOf = { oneOf: [{ type: 'integer' }, { type: 'number', minimum: 0 }] };
    expect(valid(oneOf, -1)).toBe(true); // only the first
    expect(check(oneOf, 1)).toEqual(['(root): must match exactly one of 2 alternatives (matches 2)']);
    expect(check({ anyOf: [{ type: 'string' }, { type: 'null' }] }, 1)).toEqual(['(root): must match at least one of 2 alternatives (must be string | must be null)']);
    expect(valid({ allOf: [{ minimum: 1 }, { maximum: 3 }] }, 4)).toBe(false);
    expect(valid({ not: { type: 'string' } }, 'x')).toBe(false);
    const conditional = { if: { properties: { kind: { const: 'card' } } }, then: { required: ['number'] }, else: { required: ['iban'] } };
    expect(check(conditional, { kind: 'card' })).toEqual(['number: is required']);
    expect(check(conditional, { kind: 'bank' })).toEqual(['iban: is required']);
  });

  it('local $refs, recursive ones included, in $defs and definitions', () => {
    const tree = { $defs: { node: { type: 'object', properties: { children: { type: 'array', items: { $ref: '#/$defs/node' } } }, required: ['children'] } }, $ref: '#/$defs/node' };
    expect(valid(tree, { children: [{ children: [] }] })).toBe(true);
    expect(check(tree, { children: [{ children: [{}] }] })).toEqual(['children.0.children.0.children: is required']);
    const list = { type: 'object', properties: { next: { anyOf: [{ $ref: '#' }, { type: 'null' }] }, v: { type: 'integer' } } };
    expect(valid(list, { v: 1, next: { v: 2, next: null } })).toBe(true);
    expect(valid(list, { v: 1, next: { v: 'x', next: null } })).toBe(false);
    const draft7 = { $schema: 'http://json-schema.org/draft-07/schema#', definitions: { id: { type: 'string' } }, properties: { a: { $ref: '#/definitions/id' } } };
    expect(check(draft7, { a: 1 })).toEqual(['a: must be string']);
  });

  it('ignores annotations and x- keywords, and does not fill in defaults', () => {
    const schema = { type: 'object', title: 't', description: 'd', 'x-vendor': 1, properties: { n: { type: 'number', default: 3, examples: [1], deprecated: true } } };
    expect(valid(schema, {})).toBe(true);
    const parsed = jsonSchemaToZod(schema).parse({});
    expect(parsed).toEqual({});
  });
});

describe('compileJsonSchema: refuses what it cannot check faithfully', () => {
  const refused = (schema: unknown) => {
    try {
      compileJsonSchema(schema);
    } catch (error) {
      return { code: (error as { code?: string }).code, ...(error as { details: object }).details };
    }
    return undefined;
  };

  it.each([
    [{ type: 'object', unevaluatedProperties: false }, 'unevaluatedProperties', '#'],
    [{ properties: { a: { $dynamicRef: '#x' } } }, '$dynamicRef', '#/properties/a'],
    [{ properties: { a: { $id: 'https://x' } } }, '$id', '#/properties/a'],
    [{ type: 'string', nullable: true }, 'nullable', '#'],
    [{ $ref: 'https://example.com/schema.json' }, '$ref', '#'],
    [{ $ref: '#/$defs/missing' }, '$ref', '#'],
    [{ prefixItems: [{}], $schema: 'http://json-schema.org/draft-07/schema#' }, 'prefixItems', '#'],
    [{ items: [{}] }, 'items', '#'],
    [{ dependencies: { a: ['b'] } }, 'dependencies', '#'],
    [{ $schema: 'http://json-schema.org/draft-07/schema#', properties: { a: { $ref: '#/definitions/x', minLength: 2 } }, definitions: { x: {} } }, '$ref', '#/properties/a'],
    [{ $schema: 'https://example.com/my-dialect' }, '$schema', '#'],
    [{ type: 'text' }, 'type', '#'],
    [{ minLength: -1 }, 'minLength', '#'],
    [{ pattern: '(' }, 'pattern', '#'],
    [{ required: 'a' }, 'required', '#'],
  ])('%j: %s at %s', (schema, keyword, at) => {
    expect(refused(schema)).toEqual({ code: 'SCHEMA_UNSUPPORTED', keyword, at });
  });

  it('accepts what the MCP SDK emits for a zod schema (draft-07, input side)', () => {
    const emitted = z.toJSONSchema(z.object({ q: z.string().min(1).regex(/^[a-z]+$/), n: z.number().int().optional(), tags: z.array(z.enum(['a', 'b'])).default([]), opt: z.union([z.string(), z.null()]) }), { target: 'draft-7', io: 'input' });
    const check = compileJsonSchema(emitted);
    expect(check({ q: 'abc', tags: ['a'], opt: null })).toEqual([]);
    expect(check({ q: 'ABC', opt: 1 }).map((i) => i.path.join('.'))).toEqual(['q', 'opt']);
  });
});
