import type { RunStore } from './run-store.js';

export { stateString, statesOf } from './state-string.js';

/** One row of a run's history: a checkpoint and the state of every actor at it. */
export interface HistoryEntry {
  seq: number;
  ts: number;
  version: string;
  /** Root and agent states, e.g. `{ crew: 'working', researcher: 'acting' }`. */
  states: Record<string, string>;
}

/** Summarises every checkpoint of a run, oldest first. */
export async function runHistory(store: RunStore, runId: string, rootId: string): Promise<HistoryEntry[]> {
  await store.requireRun(runId);
  return store.checkpointStates(runId, rootId);
}

