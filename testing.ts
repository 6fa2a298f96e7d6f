/**
 * Test helpers: deterministic clock and ids, in-memory storage, the scripted model.
 * @module troupe/testing
 */
export { countingIds, manualClock, seededRandom, type Clock, type IdGenerator, type ManualClock } from './core/clock.js';
export { memoryStorage } from './storage/memory.js';
export { scriptedModel, type ScriptedModelOptions, type ScriptedTurn, type Script } from './models/scripted.js';
export { createRunStore, type RunStore } from './core/run-store.js';
