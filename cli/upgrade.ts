/**
 * `troupe upgrade --crew FILE [--dry-run]`: which unfinished runs of a crew the new code
 * would continue cleanly, and (without `--dry-run`) the upgrade of just those.
 * @module
 */
import { randomIds, systemClock } from '../core/clock.js';
import { createNode } from '../core/node.js';
import { upgradeRuns, type UpgradeVerdict } from '../core/replay/upgrade.js';
import { createRunStore } from '../core/run-store.js';
import type { Storage } from '../core/storage.js';
import { levelStorage } from '../storage/level.js';
import { loadCrewModule } from './load.js';
import { openForReading } from './read-database.js';
import { EXIT_DIVERGED } from './replay.js';

/** `troupe upgrade`: resolves with the exit code (4 when a run diverges or is blocked). */
export async function upgradeCommand(opts: { db: string; crew: string; dryRun?: boolean; json?: boolean }): Promise<number> {
  const mod = await loadCrewModule(opts.crew);
  const dryRun = opts.dryRun === true;
  // A dry run only reads (through a running node if one holds the database); an upgrade writes, so it needs the database to itself.
  await using db: { storage: Storage } & AsyncDisposable = dryRun ? await openForReading(opts.db) : await (async () => {
    const storage = await levelStorage({ path: opts.db, create: false });
    return { storage, [Symbol.asyncDispose]: () => storage.close() };
  })();
  const verdicts = await upgradeRuns(
    { storage: db.storage, store: createRunStore(db.storage), models: mod.models, clock: systemClock, ids: randomIds, createNode },
    { crew: mod.definition, dryRun, source: mod.path },
  );
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ upgrade: { crew: mod.definition.id, version: mod.definition.version, dryRun, runs: verdicts.map(({ report: _r, ...v }) => v) } })}\n`);
  } else process.stdout.write(formatVerdicts(verdicts, { crew: mod.definition.id, version: mod.definition.version, file: opts.crew, dryRun }));
  return verdicts.every((v) => v.verdict === 'clean') ? 0 : EXIT_DIVERGED;
}

/** The verdicts for a person: one line a run, then what happened or would. */
export function formatVerdicts(verdicts: readonly UpgradeVerdict[], about: { crew: string; version: string; file: string; dryRun: boolean }): string {
  const lines = [`upgrade of the unfinished runs of crew ${about.crew} to version ${about.version} (${about.file})${about.dryRun ? ', dry run: nothing is changed' : ''}`];
  if (verdicts.length === 0) return `${lines[0]}\n  no unfinished runs of this crew\n`;
  const width = Math.max(...verdicts.map((v) => v.runId.length));
  for (const v of verdicts) {
    const what = v.verdict === 'clean' ? (v.upgraded ? 'upgraded: continues on the new code' : 'would continue cleanly') : `${v.reason ?? ''}; left as it is`;
    lines.push(`  ${v.runId.padEnd(width)}  ${v.status.padEnd(7)}  v${v.version}  ${v.verdict.padEnd(8)}  ${what}`);
  }
  const clean = verdicts.filter((v) => v.verdict === 'clean').length;
  lines.push(
    about.dryRun
      ? `${clean} of ${verdicts.length} would upgrade${clean > 0 ? '; run without --dry-run to upgrade them' : ''}`
      : `${verdicts.filter((v) => v.upgraded).length} of ${verdicts.length} upgraded`,
  );
  return `${lines.join('\n')}\n`;
}
