import { describe, expect, it } from 'vitest';
import { levelStorage } from '../storage/level.js';
import { runTroupe } from './helpers/cli.js';
import { tempDir } from './helpers/temp.js';

const FAST = { TROUPE_SCRIPTED_LATENCY_MS: '0' };

describe('troupe CLI', () => {
  it('runs the two-agent example crew to completion, printing what it loads, the run id, progress, then the output', async () => {
    await using db = await tempDir();
    const { code, stdout, stderr } = await runTroupe(['run', 'examples/research-crew.ts', '--db', db.path, '--run-id', 'cli-1'], FAST);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const lines = stdout.split('\n');
    expect(lines[0]).toBe('loading examples/research-crew.ts…');
    expect(lines[1]).toBe('run cli-1');
    expect(stdout).toMatch(/researcher\s+model scripted:default \d+→\d+ tok/);
    expect(stdout).toMatch(/researcher\s+tool search ok/);
    expect(stdout).toMatch(/writer\s+tool count_words ok/);
    expect(stdout).toMatch(/completed in [\d.]+ s\n\nBrief: Troupe combines three ideas\./);

    const listed = await runTroupe(['runs', '--db', db.path, '--json']);
    expect(listed.code).toBe(0);
    const { runs: [record] } = JSON.parse(listed.stdout);
    expect(record).toMatchObject({ id: 'cli-1', crew: 'research-crew', status: 'completed', resumes: 0 });
    expect(record.output).toMatch(/^Brief: /);
    expect(record.checkpoint).toBeGreaterThan(5);

    const table = await runTroupe(['runs', '--db', db.path]);
    expect(table.stdout).toMatch(/^cli-1\s+completed\s+research-crew/);
  });

  it('explains bad usage and unknown runs on stderr with a non-zero exit', async () => {
    await using db = await tempDir();
    // An existing (empty) database: `resume` opens it, never creates one (see storage-damage.test.ts).
    await (await levelStorage({ path: db.path })).close();
    const missing = await runTroupe(['resume', 'no-such-run', '--db', db.path]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/\[RUN_NOT_FOUND\] no run "no-such-run"/);
    const badFile = await runTroupe(['run', 'examples/does-not-exist.ts', '--db', db.path]);
    expect(badFile.code).toBe(1);
    expect(badFile.stderr).toMatch(/cannot load crew module/);
    const unknown = await runTroupe(['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command 'frobnicate'/);
  });
});
