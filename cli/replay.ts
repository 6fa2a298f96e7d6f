/**
 * `troupe replay`: a recorded run re-executed with new crew code (or a new model) in a
 * scratch space, and what it found, for a person or as one JSON object.
 * @module
 */
import { InvalidArgumentError } from 'commander';
import { randomIds, systemClock } from '../core/clock.js';
import { createNode } from '../core/node.js';
import { replayRun, type ReplayOptions, type ReplayReport } from '../core/replay/replay.js';
import type { RehearsalSide } from '../core/replay/rehearsal.js';
import { createRunStore } from '../core/run-store.js';
import type { Storage } from '../core/storage.js';
import { EXIT_INTERRUPTED } from './commands.js';
import { loadCrewModule, type CrewModule } from './load.js';
import { openForReading } from './read-database.js';

/** Exit code of a replay (or upgrade) that found a divergence. */
export const EXIT_DIVERGED = 4;

/** Options of `troupe replay`. */
export interface ReplayCommandOptions {
  db: string;
  crew: string;
  at?: number;
  continue?: boolean;
  /** `old=new`: two model references. */
  model?: string;
  json?: boolean;
}

/** `--model old=new` as a rehearsal; a usage error when it is not two references. */
export function parseRehearsal(value: string): { from: string; to: string } {
  const cut = value.indexOf('=');
  const from = value.slice(0, cut);
  const to = value.slice(cut + 1);
  if (cut <= 0 || !to || to.includes('=')) throw new InvalidArgumentError(`--model takes old=new (two model references, e.g. openai:gpt-4o=anthropic:claude-sonnet-4), not "${value}"`);
  return { from, to };
}

/** Replays `runId` of `storage` with `mod`'s crew: read-only on `storage`, everything new happens in memory. */
export function replayWith(storage: Storage, mod: CrewModule, runId: string, options: Omit<ReplayOptions, 'crew'>): Promise<ReplayReport> {
  return replayRun({ store: createRunStore(storage), models: mod.models, clock: systemClock, ids: randomIds, createNode }, runId, { ...options, crew: mod.definition });
}

/** `troupe replay <run-id> --crew FILE`. Resolves with the exit code. */
export async function replayCommand(runId: string, opts: ReplayCommandOptions): Promise<number> {
  const rehearse = opts.model === undefined ? undefined : parseRehearsal(opts.model);
  const mod = await loadCrewModule(opts.crew);
  await using db = await openForReading(opts.db);
  // Ctrl-C ends the replay with what it found so far (it only ever read the database).
  const interrupt = new AbortController();
  const stop = () => interrupt.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const report = await replayWith(db.storage, mod, runId, {
      signal: interrupt.signal,
      ...(opts.at !== undefined ? { at: opts.at } : {}),
      ...(opts.continue ? { continue: true } : {}),
      ...(rehearse ? { rehearse } : {}),
    });
    process.stdout.write(opts.json ? `${JSON.stringify({ replay: report })}\n` : formatReport(report, opts.crew));
    if (report.ended === 'stopped') return EXIT_INTERRUPTED;
    // A rehearsal compares two models: that their runs differ is its finding, not a failure.
    return report.clean || rehearse ? 0 : EXIT_DIVERGED;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
const where = (d: { agent?: string; task?: number; step?: number; callId?: string }) =>
  d.agent === undefined ? 'the run' : `${d.agent}, task ${d.task ?? '?'} step ${d.step ?? '?'}${d.callId ? ` (${d.callId})` : ''}`;
const WHAT: Record<string, string> = {
  model: 'it asks another model',
  tools: 'it offers other tools',
  spec: 'its tool specs or call settings differ',
  conversation: 'the conversation differs',
  'tool-call': 'it calls another tool or with other arguments',
  unrecorded: 'it makes a call the recording does not have',
  'not-asked': 'it never makes a recorded call',
  outcome: 'the run ends differently',
};

/** The side of a rehearsed step on one line. */
const side = (label: string, s: RehearsalSide | undefined) => {
  if (!s) return `    ${label}  (no such call)\n`;
  const calls = s.toolCalls.length ? ` → ${s.toolCalls.join(', ')}` : '';
  const cost = s.cost !== undefined ? `  $${s.cost.toFixed(4)}` : '';
  return `    ${label}  ${s.model}  ${JSON.stringify(s.text)}${calls}  [${s.tokens.input}+${s.tokens.output} tokens${cost}]\n`;
};

/** A report for a person: what was served, where the new code left the recording, the outcomes. */
export function formatReport(report: ReplayReport, crewFile: string): string {
  const lines: string[] = [];
  const start = report.from === 0 ? 'its start' : `checkpoint ${report.from}`;
  lines.push(`replay of run ${report.runId} (crew ${report.crew}) from ${start} with ${crewFile}`);
  lines.push(`  ${report.calls.served} of ${plural(report.calls.recorded, 'recorded call')} served from the recording, ${report.calls.unserved} not served; no tool was executed`);
  if (report.rehearsal) {
    lines.push('', 'rehearsal (recorded, then new):');
    for (const r of report.rehearsal) lines.push(`  ${r.agent} task ${r.task} step ${r.step}\n${side('recorded', r.recorded)}${side('new     ', r.replayed)}`.trimEnd());
  }
  for (const [i, d] of report.divergences.entries()) {
    lines.push('', `${i > 0 ? 'and' : report.rehearsal ? 'differs' : 'diverged'} at ${where(d)}: ${WHAT[d.kind] ?? d.kind}`, `  recorded:  ${d.recorded}`, `  new code:  ${d.requested}`);
  }
  lines.push('');
  const ended = {
    finished: `the replay finished: ${report.outcome.replayed?.status}`,
    'caught-up': 'the replay caught up with the run where it waits: the new code would continue it from there',
    diverged: 'the replay stopped at the divergence (--continue goes on with the new code\'s calls unserved)',
    stopped: 'the replay was stopped',
  }[report.ended];
  lines.push(ended);
  if (report.outcome.replayed || report.rehearsal) {
    lines.push(`  recorded output:  ${JSON.stringify(report.outcome.recorded.output ?? '')} (${report.outcome.recorded.status})`);
    if (report.outcome.replayed) lines.push(`  replayed output:  ${JSON.stringify(report.outcome.replayed.output)} (${report.outcome.replayed.status})`);
  }
  lines.push(report.clean ? 'clean: the new code asks exactly what the recording holds' : `${plural(report.divergences.length, 'divergence')}`);
  return `${lines.join('\n')}\n`;
}
