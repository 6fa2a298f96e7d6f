/**
 * The building blocks beneath the authoring API, for tools and integrations built on Troupe
 * rather than for writing crews: the policy algebra, the envelope codec, secret redaction,
 * the audit log over a `Storage`, JSON-lines export and the `Retry-After` parser. They are
 * stable to use but may change shape more readily than the root `troupe` entry point.
 * @module troupe/advanced
 */
export { decide, narrow, isNarrowerOrEqual, describeDecision, type Decision } from './core/policy.js';
export { encodeEnvelope, decodeEnvelope } from './core/envelope.js';
export { resolveSecrets, createRedactor, redact, type Redactor } from './core/secrets.js';
export { createAuditLog, toJsonl } from './core/audit-log.js';
export { openAuditSeal, type AuditSeal, type AuditKey } from './core/audit-seal.js';
export { parseRetryAfter } from './models/http.js';
