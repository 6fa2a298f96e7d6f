import { describe, expect, it } from 'vitest';
import { NOT_PUBLISHED } from './fixtures/approval-crew.js';
import { runTroupe } from './helpers/cli.js';
import { tempDir } from './helpers/temp.js';

const CREW = 'test/fixtures/approval-crew.ts';

/** The output of a command that produces a result: exactly one JSON object, on one line. */
function oneObject(stdout: string): Record<string, unknown> {
  expect(stdout.split('\n')).toHaveLength(1);
  const value = JSON.parse(stdout) as unknown;
  expect(value !== null && typeof value === 'object' && !Array.isArray(value)).toBe(true);
  return value as Record<string, unknown>;
}

/** The output of a command that streams: one JSON object a line. */
function jsonLines(stdout: string): Array<Record<string, unknown>> {
  const lines = stdout.split('\n');
  expect(lines.length).toBeGreaterThan(0);
  return lines.map((line) => {
    const value = JSON.parse(line) as unknown;
    expect(value !== null && typeof value === 'object' && !Array.isArray(value), line).toBe(true);
    return value as Record<string, unknown>;
  });
}

// Each case starts several CLI processes (tsx compiles the sources in each): slow on a busy machine.
describe('CLI --json', { timeout: 120_000 }, () => {
  it('prints one JSON object for results and JSON lines for streams, for every command that has --json', async () => {
    await using dir = await tempDir();
    const db = `${dir.path}/db`;

    const run = await runTroupe(['run', CREW, '--db', db, '--run-id', 'j1', '--json']);
    expect(run.code).toBe(3);
    const events = jsonLines(run.stdout);
    expect(events[0]).toMatchObject({ type: 'run.started', runId: 'j1' });
    expect(events.at(-1)).toMatchObject({ type: 'waiting', runId: 'j1' });
    const approvalId = events.at(-1)!.approvalId as string;

    expect(oneObject((await runTroupe(['runs', '--db', db, '--json'])).stdout)).toMatchObject({ runs: [{ id: 'j1', status: 'waiting' }] });
    expect(oneObject((await runTroupe(['approvals', '--db', db, '--json'])).stdout)).toMatchObject({ approvals: [{ id: approvalId, status: 'pending' }] });
    const history = oneObject((await runTroupe(['history', 'j1', '--db', db, '--json'])).stdout) as { runId: string; history: Array<{ seq: number }> };
    expect(history.runId).toBe('j1');
    expect(history.history.length).toBeGreaterThan(1);
    // The audit trail is a log: one record a line, like the events of a run.
    const audit = jsonLines((await runTroupe(['audit', 'j1', '--db', db, '--json'])).stdout);
    expect(audit.every((r) => typeof r.seq === 'number' && typeof r.kind === 'string')).toBe(true);
    expect(oneObject((await runTroupe(['audit', 'verify', '--db', db, '--json'])).stdout)).toMatchObject({ verify: { ok: true } });

    const resumed = await runTroupe(['resume', 'j1', '--db', db, '--json']);
    expect(resumed.code).toBe(3);
    expect(jsonLines(resumed.stdout).at(-1)).toEqual({ type: 'waiting', runId: 'j1', approvalId });

    const forked = await runTroupe(['fork', 'j1', '--at', '1', '--run-id', 'j2', '--db', db, '--json']);
    expect(forked.code).toBe(3);
    expect(jsonLines(forked.stdout).at(-1)).toMatchObject({ type: 'waiting', runId: 'j2' });

    const rejected = await runTroupe(['reject', approvalId, '--reason', 'no', '--db', db, '--json']);
    expect(rejected.code).toBe(0);
    expect(jsonLines(rejected.stdout).at(-1)).toMatchObject({ type: 'result', runId: 'j1', status: 'completed', output: NOT_PUBLISHED });
  });

  it('prints a failure as one JSON object on stdout too: a storage error, a run that does not exist, a usage error', async () => {
    await using dir = await tempDir();
    const missing = `${dir.path}/none`;
    const storage = await runTroupe(['runs', '--db', missing, '--json']);
    expect(storage.code).toBe(1);
    expect(storage.stderr).toContain('STORAGE_NOT_FOUND');
    expect(oneObject(storage.stdout)).toEqual({ error: { code: 'STORAGE_NOT_FOUND', message: expect.stringContaining(missing), exitCode: 1, details: { path: missing } } });

    const db = `${dir.path}/db`;
    expect((await runTroupe(['run', CREW, '--db', db, '--run-id', 'k1'])).code).toBe(3);
    const unknown = await runTroupe(['history', 'k2', '--db', db, '--json']);
    expect(unknown.code).toBe(1);
    expect(oneObject(unknown.stdout)).toMatchObject({ error: { code: 'RUN_NOT_FOUND', exitCode: 1 } });

    const usage = await runTroupe(['runs', '--db', db, '--json', '--bogus']);
    expect(usage.code).toBe(2);
    expect(oneObject(usage.stdout)).toEqual({ error: { code: 'USAGE', message: "unknown option '--bogus'", exitCode: 2 } });

    // Without --json, stdout stays empty.
    expect((await runTroupe(['runs', '--db', missing])).stdout).toBe('');
  });
});
