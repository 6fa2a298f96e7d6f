/**
 * The in-memory storage, for tests and ephemeral nodes. It lives in the kernel
 * (core/memory-storage.ts) because a replay's scratch space is one; this is its public path.
 * @module
 */
export { memoryStorage } from '../core/memory-storage.js';
