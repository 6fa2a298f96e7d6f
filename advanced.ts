/**
 * The building blocks beneath the authoring API, for tools and integrations built on Troupe
 * rather than for writing crews: the policy algebra, the envelope codec, secret redaction,
 * the audit log over a `Storage`, JSON-lines export, the `Retry-After` parser, and portable
 * recordings and upgrades of waiting runs (what `troupe export`, `import` and `upgrade` do). They are
 * stable to use but may change shape more readily than the root `troupe` entry point.
 * @module troupe/advanced
 */
export { decide, narrow, isNarrowerOrEqual, describeDecision, type Decision } from './core/policy.js';
export { encodeEnvelope, decodeEnvelope } from './core/envelope.js';
export { resolveSecrets, createRedactor, redact, type Redactor } from './core/secrets.js';
export { createAuditLog, toJsonl } from './core/audit-log.js';
export { openAuditSeal, type AuditSeal, type AuditKey } from './core/audit-seal.js';
export { parseRetryAfter } from './models/http.js';
// For a RunnableDefinition whose machine is built once and shared by its runs, as a crew's is.
export { runtimeOf } from './core/runtime.js';
export {
  exportRecording,
  importRecording,
  parseRecording,
  RecordingFileSchema,
  RECORDING_FORMAT,
  RECORDING_VERSION,
  DEFAULT_RECORDING_LIMITS,
  type RecordingFile,
  type RecordingLimits,
  type ExportOptions,
} from './core/replay/recording-file.js';
export { upgradeRuns, type UpgradeOptions, type UpgradeVerdict } from './core/replay/upgrade.js';
