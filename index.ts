/**
 * Troupe: a durable actor-model runtime for multi-agent crews on XState v5. This entry point
 * is what a crew is written with: `createNode`, `agent`, `crew`, `tool`, the model providers,
 * `memoryStorage`, the secrets providers, errors and the types of all of these. The building
 * blocks beneath it (policy algebra, envelope codec, redaction, audit log) are in
 * `troupe/advanced`.
 * @module
 */
export { createNode, type NodeOptions, type NodeStatus, type ResumeAllOptions, type RunDefinition, type RunHandle, type RunOptions, type SendOptions, type TroupeNode } from './core/node.js';
export type { RunResult, ResumeOptions } from './core/node-types.js';
export type { ReplayOptions, ReplayReport, ReplayEnd, Divergence, RehearsalStep } from './core/replay/replay.js';
export { DivergenceKind } from './core/replay/divergence.js';
export type { RehearsalSide } from './core/replay/rehearsal.js';
export type { OutputContract } from './core/output-schema.js';
export { TroupeError, ErrorCode, FINAL_CODES, isTroupeError, isRetryable, serializeError, type SerializedError, type TroupeErrorOptions } from './core/errors.js';
export { address, parseAddress, parseEnvelope, EnvelopeSchema, AddressSchema, type Address, type Envelope, type EnvelopeLimits } from './core/envelope.js';
export { msg, MessageSchema, ToolCallSchema, parseToolArgs, checkToolArgs, type Message, type AssistantMessage, type ToolMessage, type ToolCall } from './core/messages.js';
export { resolveModel, checkModelRefs, type ModelRefProblem, type ModelProvider, type ModelProviders, type ModelRequest, type ModelResponse, type ModelCallContext, type ToolSpec, type Usage } from './core/model.js';
export { ModelSettingsSchema, type ModelSettings } from './core/model-settings.js';
export { tool, type Tool, type ToolOptions, type ToolContext, type ToolEffect } from './core/tool.js';
export { systemClock, randomIds, countingIds, type Clock, type IdGenerator } from './core/clock.js';
export type { Storage, StorageOp, KeyRange, WriteOptions, Status, RunClaim } from './core/storage.js';
export type { RunRecord, RunStatus, Checkpoint, JournalEntry, LedgerEntry } from './core/run-store.js';
export type { RunEvent, RunEventListener } from './core/events.js';
export type { ActorRuntime, RunnableDefinition, RunOutput, OutgoingMessage, TypedOutput } from './core/runtime.js';
export { agent, type AgentOptions, type AgentDefinition, type RetryPolicy, type AgentContext } from './actors/agent.js';
export { crew, CREW_ACTOR_ID, type CrewOptions, type CrewDefinition, type CrewProcess } from './actors/crew.js';
export type { CrewOutput, CrewContext } from './actors/crew-machine.js';
export type { TaskTemplate, ChatLine, SpeakerSelector } from './actors/processes.js';
export { DEFAULT_SUPERVISION, type SupervisionPolicy, type FailureRecord } from './actors/supervision.js';
export { blackboardTools, type BlackboardEntry } from './actors/blackboard.js';
export type { Budget } from './core/runtime.js';
export type { BlackboardAccess } from './core/tool.js';
export {
  scriptedModel,
  openAICompatible,
  anthropic,
  createRouter,
  type ScriptedModelOptions,
  type ScriptedTurn,
  type ScriptedCall,
  type Script,
  type OpenAICompatibleOptions,
  type AnthropicOptions,
  type RouterOptions,
  type RouteSpec,
  type Deprecation,
  type BreakerOptions,
  type BreakerState,
  type ModelRouter,
  type RouteAttempt,
  type TokenListener,
  type ModelPrice,
} from './models/index.js';
export { manualClock, type ManualClock } from './core/clock.js';
export { backoffDelay, jitterUnit, type BackoffPolicy } from './core/backoff.js';
export { ApprovalDecisionSchema, type ApprovalDecision, type ApprovalRecord, type ApprovalRequest, type ApprovalReason } from './core/approvals.js';
export type { Migration } from './core/migrations.js';
export type { HistoryEntry } from './core/history.js';
export { memoryStorage } from './storage/memory.js';
export { definePolicy, PolicySchema, type Policy, type PolicyDecision } from './core/policy.js';
export { envSecrets, staticSecrets, REDACTED, type SecretsProvider } from './core/secrets.js';
export type { AuditLog, AuditRecord, AuditEntry, AuditHead, AuditVerification, AuditFailure } from './core/audit-log.js';
export type { Transport, TransportStatus, PeerStatus, DeliverFn, DeliveryReceipt, TransportBindings, TransportFactory } from './core/transport.js';
export type { TraceCarrier, TelemetryFactory, TelemetryBindings, NodeTelemetry, RunTraceStart } from './core/telemetry.js';
