/**
 * `troupe export` and `troupe import`: one run as one portable, redacted file, and back into a
 * database (see core/replay/recording-file.ts).
 * @module
 */
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { exportRecording, importRecording, parseRecording } from '../core/replay/recording-file.js';
import { levelStorage } from '../storage/level.js';
import { openForReading } from './read-database.js';

/** `troupe export <run-id> [--out FILE]`: resolves with the exit code. */
export async function exportCommand(runId: string, opts: { db: string; out?: string; json?: boolean }): Promise<number> {
  const out = opts.out ?? `${runId}.recording.json`;
  await using db = await openForReading(opts.db);
  const file = await exportRecording(db.storage, runId);
  // Written aside, then renamed: a failed export never leaves half a file under the name.
  const partial = `${out}.partial`;
  try {
    await writeFile(partial, `${JSON.stringify(file)}\n`, { mode: 0o600 });
    await rename(partial, out);
  } catch (error) {
    await rm(partial, { force: true });
    throw error;
  }
  const summary = { runId, crew: file.crew, file: out, keys: file.entries.length, secrets: file.secrets };
  if (opts.json) process.stdout.write(`${JSON.stringify({ export: summary })}\n`);
  else {
    const unresolved = file.secrets.unresolved.length ? `; could not resolve ${file.secrets.unresolved.join(', ')} to scrub again (the run stored them redacted)` : '';
    const redacted = file.secrets.redacted.length ? `, secrets ${file.secrets.redacted.join(', ')} scrubbed` : '';
    process.stdout.write(`exported run ${runId} (crew ${file.crew}, ${file.entries.length} keys${redacted}) to ${out}${unresolved}\n`);
  }
  return 0;
}

/** `troupe import <file>`: loads a recording into a database (created if missing); never overwrites a run. */
export async function importCommand(path: string, opts: { db: string; json?: boolean }): Promise<number> {
  // Parsed and checked whole before the database is opened: a bad file touches nothing.
  const file = parseRecording(await readFile(path));
  await using storage = await levelStorage({ path: opts.db, create: true });
  const { runId, keys } = await importRecording(storage, file);
  if (opts.json) process.stdout.write(`${JSON.stringify({ import: { runId, crew: file.crew, keys, db: opts.db } })}\n`);
  else process.stdout.write(`imported run ${runId} (crew ${file.crew}, ${keys} keys) into ${opts.db}\n`);
  return 0;
}
