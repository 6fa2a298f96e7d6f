import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));

it('survives random SIGKILLs with no duplicated irreversible effect and no lost acknowledged write', async () => {
  // A small sample in CI; `npm run crash-trials -- --trials 1000` is the full benchmark.
  const { stdout } = await run(process.execPath, ['--import', 'tsx', 'bench/crash-trials.ts', '--trials', '4', '--seed', '11'], { cwd: ROOT, timeout: 120_000 });
  const summary = JSON.parse(stdout);
  expect(summary).toMatchObject({
    trials: 4,
    completed: 4,
    identicalOutputs: 4,
    duplicatedIrreversibleEffects: 0,
    duplicatedIdempotentEffects: 0,
    openHoldsBeyondOne: 0,
    lostAcknowledgedWrites: 0,
    ok: true,
  });
  expect(summary.kills).toBeGreaterThan(0);
}, 150_000);
