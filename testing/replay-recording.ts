import { readFile } from 'node:fs/promises';
import { randomIds, systemClock } from '../core/clock.js';
import { memoryStorage } from '../core/memory-storage.js';
import type { ModelProviders } from '../core/model.js';
import { createNode } from '../core/node.js';
import { importRecording, parseRecording, type RecordingFile } from '../core/replay/recording-file.js';
import { replayRun, type ReplayOptions, type ReplayReport } from '../core/replay/replay.js';
import { createRunStore } from '../core/run-store.js';
import type { RunnableDefinition } from '../core/runtime.js';

/** Options of {@link replayRecording}: those of `node.replay` but the crew. */
export interface ReplayRecordingOptions extends Omit<ReplayOptions, 'crew' | 'models'> {
  /** Providers for the models a replay asks (rehearsal, `continue`). Default none: only recorded answers are served. */
  models?: ModelProviders;
}

/**
 * Replays a recording file (`troupe export`) against `crew`, in memory: a recorded run becomes
 * a regression test. Resolves with the report; `report.clean` says the crew still asks what the
 * run recorded, `report.divergences[0]` where it does not. `RECORDING_INVALID` for a damaged file.
 *
 * @example
 * import { replayRecording } from 'troupe/testing';
 * it('still handles the refund of last week', async () => {
 *   const report = await replayRecording('test/recordings/refund-0412.json', supportCrew);
 *   expect(report.divergences).toEqual([]);
 * });
 */
export async function replayRecording(file: string | RecordingFile, crew: RunnableDefinition, options: ReplayRecordingOptions = {}): Promise<ReplayReport> {
  const recording = typeof file === 'string' ? parseRecording(await readFile(file)) : file;
  await using storage = memoryStorage();
  await importRecording(storage, recording);
  // `return await`: the scratch storage must stay open until the replay is done.
  return await replayRun({ store: createRunStore(storage), models: options.models ?? {}, clock: systemClock, ids: randomIds, createNode }, recording.runId, { ...options, crew });
}
