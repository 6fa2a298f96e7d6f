import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { TROUPE_BIN } from './helpers/built-cli.js';
import { POSTGRES_SERVER } from './helpers/postgres-server.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Runs `bench/crash-trials.ts` with `args` on the compiled CLI and returns its JSON summary. */
async function crashTrials(args: string[]): Promise<Record<string, unknown> & { kills: { total: number }; commands: { fork: number } }> {
  // The bench exits 1 when an invariant breaks; its JSON is what we want to see either way.
  const { stdout, stderr } = await run(process.execPath, ['--conditions=troupe-source', '--import', 'tsx', 'bench/crash-trials.ts', ...args, '--bin', TROUPE_BIN], { cwd: ROOT, timeout: 150_000 }).catch(
    (error: { stdout?: string; stderr?: string }) => ({ stdout: error.stdout ?? '', stderr: error.stderr ?? '' }),
  );
  // No JSON at all: the bench itself failed (e.g. the Postgres server did not answer); say why.
  if (!stdout.trim().startsWith('{')) throw new Error(`the crash trials printed no summary:\n${stderr}`);
  const summary = JSON.parse(stdout);
  expect(summary, stderr).toMatchObject({
    duplicatedIrreversibleEffects: 0,
    duplicatedIdempotentEffects: 0,
    openHoldsBeyondOne: 0,
    lostAcknowledgedWrites: 0,
    duplicatedEffectsAfterApproval: 0,
    approvedCallsRerunWithoutParking: 0,
    rejectedCallsWithEffect: 0,
    rejectionsNotToldToModel: 0,
    forkRedidReplayedCalls: 0,
    forkRepeatedInFlightCalls: { email: 0, reserve: 0 },
    notCompleted: [],
    failedTrials: [],
    ok: true,
  });
  return summary;
}

// A small sample in CI; `npm run crash-trials -- --trials 1000` (or `--storage postgres --trials 200`) is the full benchmark.
describe('crash trials', () => {
  it('survives random SIGKILLs in run, resume, approve, reject and fork with no duplicated or lost effect', async () => {
    // About 5 s a trial: a run and its fork.
    const summary = await crashTrials(['--trials', '4', '--seed', '11']);
    expect(summary).toMatchObject({ storage: 'level', trials: 4, runs: 8, completed: 4, expectedOutputs: 8, leaseWaits: 0 });
    expect(summary.kills.total).toBeGreaterThan(0);
    expect(summary.commands.fork).toBeGreaterThanOrEqual(4);
  }, 180_000);

  it('does the same on Postgres, where a command that finds its run still claimed by a killed one waits out that lease', async () => {
    // About 10 s a trial: a database of its own each, and a second's lease to wait out after some kills.
    const summary = await crashTrials(['--trials', '2', '--seed', '12', '--storage', 'postgres', '--postgres-server', POSTGRES_SERVER]);
    expect(summary).toMatchObject({ storage: 'postgres', leaseMs: 1000, trials: 2, runs: 4, completed: 2, expectedOutputs: 4 });
    expect(summary.kills.total).toBeGreaterThan(0);
    expect(summary.commands.fork).toBeGreaterThanOrEqual(2);
  }, 180_000);
});
