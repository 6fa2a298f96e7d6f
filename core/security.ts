import { createAuditLog, type AuditLog } from './audit-log.js';
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

const auditLogs = new WeakMap<Storage, Promise<AuditLog>>();

/** The audit log of `storage`, opened once however many nodes use it. */
function sharedAuditLog(storage: Storage, clock: Clock): Promise<AuditLog> {
  let log = auditLogs.get(storage);
  if (!log) {
    log = (async () => {
      const created = createAuditLog(storage, { clock });
      await created.open();
      return created;
    })();
    auditLogs.set(storage, log);
    // A failed open is not cached: the next node tries again.
    log.catch(() => auditLogs.delete(storage));
  }
  return log;
}

/** How long a resumed run waits for the secrets provider to answer for one name. */
const RECALL_TIMEOUT_MS = 10_000;

/** Opens the audit log of `storage` and returns the node's security context. */
export async function createSecurityContext(storage: Storage, options: { secrets?: SecretsProvider; clock: Clock }): Promise<SecurityContext> {
  const known = new Set<string>();
  let redactor: Redactor = createRedactor(known);
  // One audit log per storage: nodes sharing a storage would otherwise hand out the same
  // sequence numbers and overwrite each other's records. Each node scrubs what it appends
  // (core/run-journal.ts), so the shared log needs no redactor of its own.
  const audit = await sharedAuditLog(storage, options.clock);
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
