import { describe, expect, it } from 'vitest';
import { isTroupeError, TroupeError } from '../core/errors.js';
import { createRedactor, envSecrets, redact, REDACTED, resolveSecrets, staticSecrets, type SecretsProvider } from '../core/secrets.js';

const signal = () => new AbortController().signal;

describe('providers', () => {
  it('reads environment variables with a prefix, treating empty ones as missing', async () => {
    const env = { TROUPE_GITHUB_TOKEN: 'ghp_abc', TROUPE_EMPTY: '', GITHUB_TOKEN: 'unprefixed' };
    const provider = envSecrets({ prefix: 'TROUPE_', env });
    expect(await provider.get('GITHUB_TOKEN', { signal: signal() })).toBe('ghp_abc');
    expect(await provider.get('EMPTY', { signal: signal() })).toBeUndefined();
    expect(await envSecrets({ env }).get('GITHUB_TOKEN', { signal: signal() })).toBe('unprefixed');
  });

  it('reads process.env at lookup time by default', async () => {
    const provider = envSecrets();
    process.env.TROUPE_TEST_SECRET_X = 'late';
    try {
      expect(await provider.get('TROUPE_TEST_SECRET_X', { signal: signal() })).toBe('late');
    } finally {
      delete process.env.TROUPE_TEST_SECRET_X;
    }
  });

  it('refuses bad names and values with a TypeError stating the rule', async () => {
    expect(() => staticSecrets({ 'bad name': 'x' })).toThrow(/secret name "bad name" must match/);
    expect(() => staticSecrets({ OK: 1 as unknown as string })).toThrow(/value of "OK" must be a string/);
    await expect(envSecrets().get('$(rm -rf)', { signal: signal() })).rejects.toThrow(TypeError);
    await expect(resolveSecrets(staticSecrets({}), ['a b'], signal())).rejects.toThrow(TypeError);
  });
});

describe('resolveSecrets', () => {
  const provider = staticSecrets({ API_KEY: 'sk-live-123456', DB_PASSWORD: 'hunter2-hunter2' });

  it('returns every value by name', async () => {
    expect(await resolveSecrets(provider, ['API_KEY', 'DB_PASSWORD', 'API_KEY'], signal())).toEqual({ API_KEY: 'sk-live-123456', DB_PASSWORD: 'hunter2-hunter2' });
    expect(await resolveSecrets(provider, [], signal())).toEqual({});
  });

  it('names every missing secret, never a value, as TOOL_FAILED with reason secret-missing', async () => {
    const error = await resolveSecrets(provider, ['API_KEY', 'NOPE', 'ALSO_NOPE'], signal()).catch((e: unknown) => e);
    expect(isTroupeError(error, 'TOOL_FAILED')).toBe(true);
    const e = error as TroupeError;
    expect(e.message).toBe('secrets "NOPE", "ALSO_NOPE" not available from the secrets provider');
    expect(e.details).toEqual({ reason: 'secret-missing', secret: 'NOPE', names: ['NOPE', 'ALSO_NOPE'] });
    expect(JSON.stringify(e.toJSON())).not.toContain('sk-live-123456');
  });

  it('wraps a failing provider without quoting its message', async () => {
    const leaky: SecretsProvider = { get: async () => { throw new Error('vault said: token=sk-live-123456 rejected'); } };
    const error = (await resolveSecrets(leaky, ['API_KEY'], signal()).catch((e: unknown) => e)) as TroupeError;
    expect(error.details).toEqual({ reason: 'secret-provider-failed', secret: 'API_KEY' });
    expect(JSON.stringify(error.toJSON())).not.toContain('sk-live');
  });

  it('honours the signal before and between lookups', async () => {
    const before = new AbortController();
    before.abort(new Error('stopped'));
    await expect(resolveSecrets(provider, ['API_KEY'], before.signal)).rejects.toThrow('stopped');

    const during = new AbortController();
    const asked: string[] = [];
    const slow: SecretsProvider = {
      async get(name) {
        asked.push(name);
        during.abort(new Error('run stopping'));
        return 'value';
      },
    };
    await expect(resolveSecrets(slow, ['A', 'B'], during.signal)).rejects.toThrow('run stopping');
    expect(asked).toEqual(['A']);
  });
});

describe('redact', () => {
  it('replaces secrets deep inside strings, keys, arrays, maps, sets and bytes, without touching the input', () => {
    const input = {
      text: 'Authorization: Bearer sk-live-123456',
      nested: { list: ['a', 'sk-live-123456sk-live-123456', 3, null, true], 'key-sk-live-123456': 1 },
      bytes: new TextEncoder().encode('x=sk-live-123456;'),
      map: new Map([['k', 'hunter2-hunter2']]),
      set: new Set(['hunter2-hunter2']),
      when: new Date(0),
    };
    const out = redact(input, ['sk-live-123456', 'hunter2-hunter2']);
    expect(out.text).toBe(`Authorization: Bearer ${REDACTED}`);
    expect(out.nested.list).toEqual(['a', `${REDACTED}${REDACTED}`, 3, null, true]);
    expect(Object.keys(out.nested)).toEqual(['list', `key-${REDACTED}`]);
    expect(new TextDecoder().decode(out.bytes)).toBe(`x=${REDACTED};`);
    expect(out.map.get('k')).toBe(REDACTED);
    expect([...out.set]).toEqual([REDACTED]);
    expect(out.when).toBe(input.when);
    expect(input.text).toContain('sk-live-123456');
    expect(new TextDecoder().decode(input.bytes)).toContain('sk-live-123456');
  });

  it('scrubs a secret that contains another one whole', () => {
    expect(redact('token abcdef-123 and abcdef', ['abcdef', 'abcdef-123'])).toBe(`token ${REDACTED} and ${REDACTED}`);
  });

  it('turns errors into their serialized form and class instances into plain fields', () => {
    class Response { constructor(readonly body: string) {} }
    const out = redact({ error: new TroupeError('TOOL_FAILED', 'bad key sk-1234567', { details: { key: 'sk-1234567' } }), res: new Response('sk-1234567') }, ['sk-1234567']);
    expect(out.error).toEqual({ name: 'TroupeError', code: 'TOOL_FAILED', message: `bad key ${REDACTED}`, details: { key: REDACTED } });
    expect(out.res).toEqual({ body: REDACTED });
  });

  it('copes with cycles and shared references', () => {
    const shared = { s: 'pw-0123456789' };
    const cyclic: Record<string, unknown> = { a: shared, b: shared };
    cyclic.self = cyclic;
    const out = redact(cyclic, ['pw-0123456789']) as typeof cyclic;
    expect(out.a).toEqual({ s: REDACTED });
    expect(out.a).toBe(out.b);
    expect(out.self).toBe(out);
  });

  it('ignores empty secrets and returns values unchanged without secrets', () => {
    const value = { a: 'text' };
    expect(createRedactor([])(value)).toBe(value);
    expect(redact(value, [''])).toBe(value);
    expect(redact('plain', ['', 'secret-value'])).toBe('plain');
  });
});
