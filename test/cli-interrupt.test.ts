import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { controlSocketPath } from '../cli/control-path.js';
import { CONFIRMED_OUTPUT } from '../examples/order-crew.js';
import { runTroupe } from './helpers/cli.js';
import { useCleanups } from './helpers/cleanups.js';

const { dir, spawn } = useCleanups();

// Each case starts several CLI processes (tsx compiles the sources in each): slow on a busy machine.
describe('Ctrl-C on troupe run', { timeout: 120_000 }, () => {
  it('closes the node, prints the exact command that resumes the run (with --db), exits 130; that command finishes it', async () => {
    const db = join(await dir(), 'db');
    const env = { TROUPE_WORLD: await dir(), TROUPE_SCRIPTED_LATENCY_MS: '0', TROUPE_TOOL_LATENCY_MS: '0' };
    const proc = spawn(['run', 'examples/order-crew.ts', '--db', db, '--run-id', 'int-1'], { ...env, TROUPE_SLOW_TOOL: 'check_stock' });
    await proc.waitFor(/^slow tool check_stock started$/);
    proc.child.kill('SIGINT');
    expect(await proc.exit).toEqual({ code: 130, signal: null });
    expect(proc.stderr()).toBe(`\nSIGINT: stopped; run int-1 is checkpointed. Continue it with:\n  troupe resume int-1 --db ${db}\n`);
    expect(existsSync(controlSocketPath(db))).toBe(false);

    const hint = proc.stderr().trim().split('\n').at(-1)!.trim().split(' ');
    expect(hint.slice(0, 2)).toEqual(['troupe', 'resume']);
    const resumed = await runTroupe(hint.slice(1), env);
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toMatch(/^run int-1\n {2}resumed from checkpoint \d+/);
    expect(resumed.stdout).toContain(CONFIRMED_OUTPUT);
  });

  it('stops a run waiting for a human the same way, and says so as a JSON line with --json', async () => {
    const db = join(await dir(), 'db');
    const proc = spawn(['run', 'test/fixtures/approval-crew.ts', '--db', db, '--run-id', 'int-2', '--wait', '--json']);
    await proc.waitFor(/"type":"waiting"/);
    proc.child.kill('SIGINT');
    expect((await proc.exit).code).toBe(130);
    expect(JSON.parse(proc.lines.at(-1)!)).toEqual({ type: 'interrupted', runId: 'int-2', signal: 'SIGINT', resume: `troupe resume int-2 --db ${db}` });
    expect(proc.stderr()).toContain(`troupe resume int-2 --db ${db}\n`);
    // Durable before the exit: the run is there, still waiting, for the next process.
    const runs = JSON.parse((await runTroupe(['runs', '--db', db, '--json'])).stdout) as { runs: Array<{ id: string; status: string }> };
    expect(runs.runs).toMatchObject([{ id: 'int-2', status: 'waiting' }]);
  });
});
