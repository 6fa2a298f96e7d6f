import { upgradeCheckpoint } from '../migrations.js';
import type { Storage } from '../storage.js';
import type { RunnableDefinition } from '../runtime.js';
import { CALL_GATE, holdCall, type CallGate } from './gate.js';
import { loadRecording } from './recording.js';
import { replayRecording, type ReplayContext, type ReplayReport } from './replay.js';

/** What an upgrade found for one unfinished run. */
export interface UpgradeVerdict {
  runId: string;
  status: string;
  /** The crew version the run's newest checkpoint was written by. */
  version: string;
  /**
   * `clean`: the new code replays the run up to where it is, and its migrations take the
   * run's newest checkpoint to the new version; `diverged`: the replay left the recording;
   * `blocked`: no migration (or a failing one) reaches the new version.
   */
  verdict: 'clean' | 'diverged' | 'blocked';
  /** Why, in words, for `diverged` and `blocked`. */
  reason?: string;
  /** The replay's report (absent when blocked before replaying). */
  report?: ReplayReport;
  /** Set when the run now continues on the new code (not with `dryRun`). */
  upgraded?: boolean;
}

/** Options of {@link upgradeRuns}. */
export interface UpgradeOptions {
  /** The new crew code (its id picks the runs). */
  crew: RunnableDefinition;
  /** List the verdicts, change nothing. */
  dryRun: boolean;
  /** The module of the new code, recorded in every upgraded run (what `troupe resume` loads). */
  source?: string;
}

/** A gate that lets nothing through: an upgrade restores a run and checkpoints it, never executes a call. */
const holdEverything: CallGate = {
  model: (_a, _s, _c, signal) => holdCall(signal, 'an upgrade executes no call'),
  tool: (_a, _s, _c, signal) => holdCall(signal, 'an upgrade executes no call'),
};

/**
 * Replays every unfinished run of `options.crew`'s crew in `storage` against the new code and
 * checks its migrations against each run's newest checkpoint (nothing written), then, unless
 * `dryRun`, upgrades the runs that came out clean: each is restored under the new code (its
 * snapshot migrated), checkpointed and stopped again, so it continues on the new code when it
 * next runs. A restored run executes nothing meanwhile (a call it would re-issue is held and
 * dropped). Runs that diverge or are blocked are not touched.
 */
export async function upgradeRuns(ctx: ReplayContext & { storage: Storage }, options: UpgradeOptions): Promise<UpgradeVerdict[]> {
  const { crew } = options;
  const runs = (await ctx.store.listRuns()).filter((r) => r.crew === crew.id && (r.status === 'running' || r.status === 'waiting') && !r.part);
  const verdicts: UpgradeVerdict[] = [];
  for (const run of runs.sort((a, b) => a.startedAt - b.startedAt || a.id.localeCompare(b.id))) {
    const latest = await ctx.store.latestCheckpoint(run.id);
    const base = { runId: run.id, status: run.status, version: latest?.machine.version ?? run.version };
    if (!latest) {
      verdicts.push({ ...base, verdict: 'blocked', reason: 'it has no checkpoint' });
      continue;
    }
    try {
      upgradeCheckpoint(latest, crew, crew.migrations ?? []);
    } catch (error) {
      verdicts.push({ ...base, verdict: 'blocked', reason: (error as Error).message });
      continue;
    }
    const report = await replayRecording(ctx, await loadRecording(ctx.store, run.id), { crew });
    const first = report.divergences[0];
    verdicts.push(report.clean ? { ...base, verdict: 'clean', report } : { ...base, verdict: 'diverged', report, reason: first ? `${first.agent ?? 'the run'}${first.step !== undefined ? ` step ${first.step}` : ''}: ${first.recorded} → ${first.requested}` : `the replay ${report.ended}` });
  }
  if (options.dryRun || !verdicts.some((v) => v.verdict === 'clean')) return verdicts;
  await using node = await ctx.createNode({ storage: ctx.storage, models: ctx.models, crews: [crew], resume: false, clock: ctx.clock, ids: ctx.ids, passivateAfterMs: 0, [CALL_GATE]: holdEverything });
  for (const verdict of verdicts) {
    if (verdict.verdict !== 'clean') continue;
    const handle = await node.resume(verdict.runId, crew, options.source !== undefined ? { source: options.source } : undefined);
    await handle.stop();
    verdict.upgraded = true;
  }
  return verdicts;
}
