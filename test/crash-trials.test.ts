import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { TROUPE_BIN } from './helpers/built-cli.js';
import { POSTGRES_SERVER } from './helpers/postgres-server.js';
import { tempDir } from './helpers/temp.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

type Summary = Record<string, unknown> & { kills: { total: number }; commands: { fork: number } };

/** Runs `bench/crash-trials.ts` with `args` on `bin` (the compiled CLI) and returns its JSON summary, and its stderr. */
async function runCrashTrials(args: string[], bin = TROUPE_BIN): Promise<{ summary: Summary; stderr: string }> {
  // The bench exits 1 when an invariant breaks; its JSON is what we want to see either way.
  const { stdout, stderr } = await run(process.execPath, ['--conditions=troupe-source', '--import', 'tsx', 'bench/crash-trials.ts', ...args, '--bin', bin], { cwd: ROOT, timeout: 150_000 }).catch(
    (error: { stdout?: string; stderr?: string }) => ({ stdout: error.stdout ?? '', stderr: error.stderr ?? '' }),
  );
  // No JSON at all: the bench itself failed (e.g. the Postgres server did not answer); say why.
  if (!stdout.trim().startsWith('{')) throw new Error(`the crash trials printed no summary:\n${stderr}`);
  return { summary: JSON.parse(stdout) as Summary, stderr };
}

/** {@link runCrashTrials}, expecting every invariant kept. */
async function crashTrials(args: string[]): Promise<Summary> {
  const { summary, stderr } = await runCrashTrials(args);
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
    harnessErrors: [],
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

  it('reports a trial the harness cannot finish with its error, and still runs the others and prints the summary', async () => {
    // A CLI whose `history` of trial 1's run prints something that is not JSON; everything else is the real CLI.
    await using dir = await tempDir();
    const bin = join(dir.path, 'troupe-broken-history.mjs');
    await writeFile(
      bin,
      `if (process.argv[2] === 'history' && process.argv[3] === 'trial-1') { process.stdout.write('not json\\n'); process.exit(0); }\nawait import(${JSON.stringify(pathToFileURL(TROUPE_BIN).href)});\n`,
    );
    const { summary } = await runCrashTrials(['--trials', '2', '--seed', '11', '--max-kills', '0'], bin);
    expect(summary).toMatchObject({ trials: 2, failedTrials: [1], ok: false, completed: 1 });
    const errors = summary.harnessErrors as Array<{ trial: number; error: string }>;
    expect(errors.map((e) => e.trial)).toEqual([1]);
    expect(errors[0]!.error).toMatch(/JSON/);
  }, 180_000);
});
