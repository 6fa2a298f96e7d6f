/**
 * Test helpers: deterministic clock and ids, in-memory storage, the scripted model, and the
 * conformance suites a storage, a transport or a model provider must pass (runner independent: pass your
 * runner's `describe`, `it` and `afterEach`).
 * @module troupe/testing
 */
export { countingIds, manualClock, seededRandom, type Clock, type IdGenerator, type ManualClock } from './core/clock.js';
export { memoryStorage } from './storage/memory.js';
export { scriptedModel, type ScriptedModelOptions, type ScriptedTurn, type Script } from './models/scripted.js';
export { createRunStore, type RunStore } from './core/run-store.js';
export type { TestRegistrar } from './testing/suite.js';
export { transportConformance, recorder, testEnvelope, type Recorder, type Received, type TransportPair, type TransportPairFactory } from './testing/transport-conformance.js';
export { replayRecording, type ReplayRecordingOptions } from './testing/replay-recording.js';
export type { ReplayReport, ReplayOptions, Divergence, DivergenceKind, RehearsalStep } from './core/replay/replay.js';
export { modelProviderConformance, type ModelProviderFixture } from './testing/model-conformance.js';
export { storageConformance, type StorageFixture, type StorageConformanceOptions } from './testing/storage-conformance.js';
