import { ErrorCode, serializeError, TroupeError } from './errors.js';

/**
 * Secrets reach tools by name through a {@link SecretsProvider}, never through a crew
 * definition, a prompt or a snapshot. Every value resolved is also handed to a redactor
 * ({@link createRedactor}) that scrubs it from anything about to be journaled, audited,
 * logged or shown to a model, so a leaked value in a tool result does not reach the disk.
 */

/** What a provider is given with each lookup. */
export interface SecretContext {
  /** Aborted when the run stops; remote providers (vaults) must honour it. */
  signal: AbortSignal;
}

/** Looks secrets up by name. `undefined` means the provider does not have it. */
export interface SecretsProvider {
  get(name: string, context: SecretContext): Promise<string | undefined>;
}

/** Options of {@link envSecrets}. */
export interface EnvSecretsOptions {
  /** Prepended to each name: with `TROUPE_`, secret `GITHUB_TOKEN` is `TROUPE_GITHUB_TOKEN`. Default `''`. */
  prefix?: string;
  /** The environment to read. Default `process.env`, read at lookup time. */
  env?: Readonly<Record<string, string | undefined>>;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,127}$/;

function assertName(name: string): void {
  if (typeof name !== 'string' || !NAME.test(name)) throw new TypeError(`secret name "${String(name)}" must match ${NAME}`);
}

/** Secrets from environment variables (`prefix` + name). An empty variable counts as missing. */
export function envSecrets(options: EnvSecretsOptions = {}): SecretsProvider {
  const prefix = options.prefix ?? '';
  if (typeof prefix !== 'string') throw new TypeError('envSecrets({ prefix }) must be a string');
  return {
    async get(name) {
      assertName(name);
      const value = (options.env ?? process.env)[`${prefix}${name}`];
      return value === undefined || value === '' ? undefined : value;
    },
  };
}

/** Secrets from a fixed record, for tests and examples. The record is copied. */
export function staticSecrets(record: Readonly<Record<string, string>>): SecretsProvider {
  const values = new Map(Object.entries(record));
  for (const [name, value] of values) {
    assertName(name);
    if (typeof value !== 'string') throw new TypeError(`staticSecrets: value of "${name}" must be a string`);
  }
  return {
    async get(name) {
      assertName(name);
      const value = values.get(name);
      return value === '' ? undefined : value;
    },
  };
}

/**
 * Looks up every name and returns their values by name. Throws a `TroupeError`
 * (`TOOL_FAILED`, `details.reason: 'secret-missing'`, `details.names`) listing every missing
 * name, and never a value; a provider that throws becomes `details.reason:
 * 'secret-provider-failed'`. An aborted `signal` rejects with its reason.
 */
export async function resolveSecrets(provider: SecretsProvider, names: readonly string[], signal: AbortSignal): Promise<Record<string, string>> {
  if (typeof provider?.get !== 'function') throw new TypeError('resolveSecrets needs a SecretsProvider (an object with get(name, { signal }))');
  for (const name of names) assertName(name);
  signal.throwIfAborted();
  const out: Record<string, string> = {};
  const missing: string[] = [];
  for (const name of new Set(names)) {
    let value: string | undefined;
    try {
      value = await provider.get(name, { signal });
    } catch (cause) {
      signal.throwIfAborted();
      // The provider's own message is kept out of `message`: it might quote what it read.
      throw new TroupeError(ErrorCode.TOOL_FAILED, `secret "${name}" could not be read: the secrets provider failed`, {
        cause,
        details: { reason: 'secret-provider-failed', secret: name },
      });
    }
    signal.throwIfAborted();
    if (typeof value === 'string' && value !== '') out[name] = value;
    else missing.push(name);
  }
  if (missing.length > 0) {
    const list = missing.map((n) => `"${n}"`).join(', ');
    throw new TroupeError(ErrorCode.TOOL_FAILED, `secret${missing.length > 1 ? 's' : ''} ${list} not available from the secrets provider`, {
      details: { reason: 'secret-missing', secret: missing[0], names: missing },
    });
  }
  return out;
}

/**
 * A secret and the encodings in which a tool or a model most often passes it on unnoticed:
 * base64 (padded, unpadded, URL-safe) and hex (lower and upper case).
 */
function encodedForms(secret: string): string[] {
  const bytes = Buffer.from(secret, 'utf8');
  const base64 = bytes.toString('base64');
  const hex = bytes.toString('hex');
  return [secret, base64, base64.replace(/=+$/, ''), bytes.toString('base64url'), hex, hex.toUpperCase()];
}

/** What replaces a secret value. */
export const REDACTED = '[redacted]';

/** Scrubs secret values out of a value; see {@link createRedactor}. */
export type Redactor = <T>(value: T) => T;

const encoder = new TextEncoder();

/**
 * A function that deep-copies a value with every occurrence of each secret, and of its base64
 * and hex forms (in strings, object keys and byte arrays), replaced by `[redacted]`. Longer secrets are replaced first,
 * so one secret containing another is scrubbed whole. Errors become their serialized form
 * (what gets persisted anyway), other class instances plain objects of their own fields;
 * dates and functions pass through.
 * Empty secrets are ignored; very short ones would scrub ordinary text, so keep them long.
 */
export function createRedactor(secrets: Iterable<string>): Redactor {
  const list = [...new Set([...secrets].filter((s) => typeof s === 'string' && s.length > 0).flatMap(encodedForms))].sort((a, b) => b.length - a.length);
  if (list.length === 0) return <T>(value: T) => value;
  const bytes = list.map((s) => Buffer.from(encoder.encode(s)));
  const replacement = Buffer.from(REDACTED);

  const text = (s: string) => {
    let out = s;
    for (const secret of list) if (out.includes(secret)) out = out.split(secret).join(REDACTED);
    return out;
  };
  const binary = (b: Uint8Array): Uint8Array => {
    let out = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    let changed = false;
    for (const secret of bytes) {
      let at = out.indexOf(secret);
      if (at < 0) continue;
      const parts: Buffer[] = [];
      let from = 0;
      while (at >= 0) {
        parts.push(out.subarray(from, at), replacement);
        from = at + secret.length;
        at = out.indexOf(secret, from);
      }
      parts.push(out.subarray(from));
      out = Buffer.concat(parts);
      changed = true;
    }
    return changed ? new Uint8Array(out) : b;
  };

  const walk = (value: unknown, seen: Map<object, unknown>): unknown => {
    if (typeof value === 'string') return text(value);
    if (value === null || typeof value !== 'object') return value;
    if (seen.has(value)) return seen.get(value);
    if (value instanceof Uint8Array) return binary(value);
    if (value instanceof Error) return walk(serializeError(value), seen);
    if (Array.isArray(value)) {
      const out: unknown[] = [];
      seen.set(value, out);
      for (const item of value) out.push(walk(item, seen));
      return out;
    }
    if (value instanceof Map) {
      const out = new Map();
      seen.set(value, out);
      for (const [k, v] of value) out.set(walk(k, seen), walk(v, seen));
      return out;
    }
    if (value instanceof Set) {
      const out = new Set();
      seen.set(value, out);
      for (const v of value) out.add(walk(v, seen));
      return out;
    }
    if (value instanceof Date) return value;
    // Other class instances become plain objects of their own fields: that is what msgpack
    // would persist of them, so passing them through untouched could leak a secret.
    const out: Record<string, unknown> = {};
    seen.set(value, out);
    for (const [k, v] of Object.entries(value)) out[text(k)] = walk(v, seen);
    return out;
  };
  return <T>(value: T) => walk(value, new Map()) as T;
}

/** Replaces every secret value inside `value` with `[redacted]` (a one-off {@link createRedactor}). */
export function redact<T>(value: T, secrets: readonly string[]): T {
  return createRedactor(secrets)(value);
}
