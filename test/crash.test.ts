import { describe, expect, it } from 'vitest';
import { createRunStore } from '../core/run-store.js';
import { levelStorage } from '../storage/level.js';
import { runTroupe, spawnTroupe } from './helpers/cli.js';
import { tempDir } from './helpers/temp.js';

// Latency makes each model call take real time, so a kill lands between steps, not after the end.
const SLOW = { TROUPE_SCRIPTED_LATENCY_MS: '80' };
const EXAMPLE = 'examples/research-crew.ts';
const fresh = (stdout: string) => stdout.split('\n').filter((l) => / model \S+ \d+→\d+ tok \d+ ms$/.test(l)).length;
const outputOf = (stdout: string) => stdout.slice(stdout.indexOf('\n\n', stdout.indexOf('completed in')) + 2);

async function journalOf(dbPath: string, runId: string) {
  await using storage = await levelStorage({ path: dbPath });
  const store = createRunStore(storage);
  return { record: await store.requireRun(runId), journal: await store.journal(runId) };
}

describe('crash and resume', () => {
  // One uncrashed run is the reference every crashed run must reproduce.
  let reference: { output: string; modelCalls: number } | undefined;
  const uncrashed = async () => {
    if (reference) return reference;
    await using db = await tempDir();
    const { code, stdout } = await runTroupe(['run', EXAMPLE, '--db', db.path, '--run-id', 'ref'], { TROUPE_SCRIPTED_LATENCY_MS: '0' });
    expect(code).toBe(0);
    return (reference = { output: outputOf(stdout), modelCalls: fresh(stdout) });
  };

  it.each([
    ['after the first completed model call', /^ {2}researcher\s+tool search ok$/],
    ['while the second agent is planning', /^ {2}writer\s+planning$/],
  ])('resumes a crew SIGKILLed %s with the same final output', async (_when, killAt) => {
    const ref = await uncrashed();
    await using db = await tempDir();
    const proc = spawnTroupe(['run', EXAMPLE, '--db', db.path, '--run-id', 'crash'], SLOW);
    await proc.waitFor(killAt);
    proc.child.kill('SIGKILL');
    const { signal } = await proc.exit;
    expect(signal).toBe('SIGKILL');

    const before = await journalOf(db.path, 'crash');
    expect(before.record.status).toBe('running');
    expect(before.journal.filter((e) => e.kind === 'model.call').length).toBeGreaterThanOrEqual(1);
    expect(before.journal.some((e) => e.kind === 'run.completed')).toBe(false);

    const resumed = await runTroupe(['resume', 'crash', '--db', db.path], SLOW);
    expect(resumed.stderr).toBe('');
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toMatch(/^run crash\n {2}resumed from checkpoint \d+/);
    expect(outputOf(resumed.stdout)).toBe(ref.output);

    // Checkpointed model calls are not made again; only the one in flight at the kill may be.
    const made = fresh(proc.lines.join('\n')) + fresh(resumed.stdout);
    expect(made).toBeGreaterThanOrEqual(ref.modelCalls);
    expect(made).toBeLessThanOrEqual(ref.modelCalls + 1);

    const after = await journalOf(db.path, 'crash');
    expect(after.record).toMatchObject({ status: 'completed', resumes: 1, output: ref.output });
    expect(after.journal.filter((e) => e.kind === 'run.resumed')).toHaveLength(1);
  });
});
