import { createAuditLog, type AuditHead } from '../core/audit-log.js';
import { openAuditSeal } from '../core/audit-seal.js';
import { auditDirOf, chainSealDir } from '../core/security.js';
import type { Storage } from '../core/storage.js';

/** Options of {@link auditVerify}. */
export interface AuditVerifyOptions {
  anchor?: AuditHead;
  /** The audit directory (key and saved heads); default as for the node (core/security.ts). */
  auditDir?: string;
  /** `false` (`--no-key`): check an unkeyed log without an audit directory. */
  key?: boolean;
  /** Print `{ verify: <verdict> }` as one JSON line instead of words. */
  json?: boolean;
  /** One node's chain of a shared database (its seal is in that chain's subdirectory of the audit directory). */
  chain?: string;
}

/**
 * `troupe audit verify`: checks the chain with the key and the saved heads found outside the
 * database, prints the verdict, and returns the exit code (0 intact, 1 not). A missing key
 * is an error (`AUDIT_KEY_MISSING`), not a pass: without it a rewritten log looks intact.
 */
export async function auditVerify(storage: Storage, options: AuditVerifyOptions): Promise<number> {
  const base = options.key === false ? undefined : await auditDirOf(storage, options.auditDir);
  const dir = base && options.chain !== undefined ? chainSealDir(base, options.chain) : base;
  const seal = dir ? await openAuditSeal(dir, { create: false }) : undefined;
  const log = createAuditLog(storage, { ...(seal ? { seal } : {}), ...(options.chain !== undefined ? { chain: options.chain } : {}) });
  const verdict = await log.verify(options.anchor ? { anchor: options.anchor } : {});
  if (options.json) {
    process.stdout.write(`${JSON.stringify({ verify: { ...verdict, ...(dir ? { auditDir: dir } : {}), ...(options.chain !== undefined ? { chain: options.chain } : {}) } })}\n`);
    return verdict.ok ? 0 : 1;
  }
  const prefix = options.chain === undefined ? '' : `node ${options.chain}: `;
  const out = (line: string) => process.stdout.write(`${prefix}${line}\n`);
  if (!verdict.ok) {
    out(`audit log TAMPERED: first bad record ${verdict.firstBad} (${verdict.reason}): ${verdict.message}`);
    return 1;
  }
  out(`audit log intact: ${verdict.count} records, head ${verdict.head.seq}:${verdict.head.hash}`);
  if (!seal) out('not keyed: whoever can write the database could have rewritten the whole log, or removed its newest records');
  else {
    if (verdict.keyed < verdict.count) out(`${verdict.count - verdict.keyed} records from before the log was keyed are plain sha256: they could have been rewritten together`);
    const saved = verdict.saved?.seq ?? 0;
    out(verdict.head.seq > saved
      ? `saved head ${saved} (${dir}): removal of the ${verdict.head.seq - saved} newest records would not show`
      : `saved head ${saved} (${dir}) covers every record`);
  }
  return 0;
}
