import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { TROUPE_BIN } from './helpers/built-cli.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

it('survives random SIGKILLs in run, resume, approve, reject and fork with no duplicated or lost effect', async () => {
  // A small sample in CI (about 8 s a trial: a run and its fork); `npm run crash-trials -- --trials 1000` is the full benchmark.
  // The bench exits 1 when an invariant breaks; its JSON is what we want to see either way.
  const { stdout, stderr } = await run(process.execPath, ['--conditions=troupe-source', '--import', 'tsx', 'bench/crash-trials.ts', '--trials', '4', '--seed', '11', '--bin', TROUPE_BIN], { cwd: ROOT, timeout: 150_000 }).catch(
    (error: { stdout?: string; stderr?: string }) => ({ stdout: error.stdout ?? '', stderr: error.stderr ?? '' }),
  );
  const summary = JSON.parse(stdout);
  expect(summary, stderr).toMatchObject({
    trials: 4,
    runs: 8,
    completed: 4,
    expectedOutputs: 8,
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
  expect(summary.kills.total).toBeGreaterThan(0);
  expect(summary.commands.fork).toBeGreaterThanOrEqual(4);
}, 180_000);
