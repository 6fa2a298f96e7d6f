import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { createAuditLog, storedAuditHead, type AuditLog } from './audit-log.js';
import { openAuditSeal } from './audit-seal.js';
import type { Clock } from './clock.js';
import { createRedactor, type Redactor, type SecretsProvider } from './secrets.js';
import type { Storage } from './storage.js';

/**
 * A node's security state, shared by its runs: where secrets come from, the values seen so
 * far (everything persisted or logged is scrubbed of them), and the node's audit log.
 */
export interface SecurityContext {
  readonly secrets: SecretsProvider | undefined;
  readonly audit: AuditLog;
  /** Scrubs every known secret value out of a value (identity while none is known). */
  redact: Redactor;
  /** Adds secret values resolved for a tool call; later writes scrub them too. */
  learn(values: Iterable<string>): void;
  /**
   * Resolves secrets by name and learns their values, for a run resumed in a process that
   * never resolved them itself. Returns the names the provider could not give (they cannot
   * be scrubbed, and the caller records that).
   */
  recall(names: Iterable<string>): Promise<string[]>;
}

const auditLogs = new WeakMap<Storage, Map<string, Promise<AuditLog>>>();

/**
 * Where the audit key and saved heads of `storage` live: `option` when given (`false`: none,
 * records are plain sha256), else `$TROUPE_AUDIT_DIR`, else `<database directory>.audit`
 * beside a database on disk; none for a storage that is not a directory (memory).
 */
export async function auditDirOf(storage: Storage, option?: string | false): Promise<string | undefined> {
  if (option === false) return undefined;
  if (typeof option === 'string') return resolve(option);
  const env = process.env.TROUPE_AUDIT_DIR;
  if (env) return resolve(env);
  const isDirectory = await stat(storage.location).then((s) => s.isDirectory(), () => false);
  return isDirectory ? `${resolve(storage.location)}.audit` : undefined;
}

/**
 * Opens the audit log of `storage` with the seal in the audit directory `auditDir` names
 * ({@link auditDirOf}). A key is created on first use, but never for a database whose
 * records are already keyed: that key was lost or is elsewhere, and a fresh one would leave
 * every earlier record unverifiable (`AUDIT_KEY_MISSING`).
 */
export async function openSealedAuditLog(storage: Storage, auditDir: string | false | undefined, clock?: Clock, chain?: string): Promise<AuditLog> {
  // Independent reads, one on the database and one on the file system: a node opens this at
  // every start, and each read is a round trip to a thread pool.
  const [stored, dir] = await Promise.all([storedAuditHead(storage, chain), auditDirOf(storage, auditDir)]);
  const sealDir = dir && chain !== undefined ? chainSealDir(dir, chain) : dir;
  const seal = sealDir ? await openAuditSeal(sealDir, { create: stored.keyId === undefined, initial: { seq: stored.seq, hash: stored.hash } }) : undefined;
  const log = createAuditLog(storage, { ...(clock ? { clock } : {}), ...(seal ? { seal } : {}), ...(chain !== undefined ? { chain } : {}) });
  // The head just read: nothing has written the chain since.
  await log.open(stored);
  return log;
}

/**
 * Where the key and heads of one node's chain live inside an audit directory: each chain
 * has its own, so nodes given the same directory do not share a heads file.
 */
export function chainSealDir(dir: string, chain: string): string {
  return join(dir, `chain-${chain}`);
}

/** The audit log of `storage` (of one chain of it), opened once however many nodes use it. */
function sharedAuditLog(storage: Storage, clock: Clock, auditDir: string | false | undefined, chain: string | undefined): Promise<AuditLog> {
  let chains = auditLogs.get(storage);
  if (!chains) auditLogs.set(storage, (chains = new Map()));
  const name = chain ?? '';
  let log = chains.get(name);
  if (!log) {
    log = openSealedAuditLog(storage, auditDir, clock, chain);
    chains.set(name, log);
    // A failed open is not cached: the next node tries again.
    log.catch(() => chains.delete(name));
  }
  return log;
}

/** How long a resumed run waits for the secrets provider to answer for one name. */
const RECALL_TIMEOUT_MS = 10_000;

/** Opens the audit log of `storage` and returns the node's security context. */
export async function createSecurityContext(storage: Storage, options: { secrets?: SecretsProvider; clock: Clock; auditDir?: string | false; auditChain?: string }): Promise<SecurityContext> {
  const known = new Set<string>();
  let redactor: Redactor = createRedactor(known);
  // One audit log per storage: nodes sharing a storage would otherwise hand out the same
  // sequence numbers and overwrite each other's records. Each node scrubs what it appends
  // (core/run-journal.ts), so the shared log needs no redactor of its own.
  const audit = await sharedAuditLog(storage, options.clock, options.auditDir, options.auditChain);
  const context: SecurityContext = {
    secrets: options.secrets,
    audit,
    redact: <T>(value: T) => redactor(value),
    learn(values) {
      const before = known.size;
      for (const v of values) if (v) known.add(v);
      if (known.size !== before) redactor = createRedactor(known);
    },
    async recall(names) {
      const missing: string[] = [];
      const values: string[] = [];
      for (const name of names) {
        try {
          const value = options.secrets ? await options.secrets.get(name, { signal: AbortSignal.timeout(RECALL_TIMEOUT_MS) }) : undefined;
          if (value) values.push(value);
          else missing.push(name);
        } catch {
          missing.push(name);
        }
      }
      context.learn(values);
      return missing;
    },
  };
  return context;
}
