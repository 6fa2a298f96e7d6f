/**
 * Crash trials: run the order crew (tools of every effect kind) in a child process, SIGKILL it
 * at a random moment, resume, maybe kill again, until it completes; act as the human for calls
 * parked as "outcome unknown". Then check what the world saw.
 *
 *   npm run crash-trials -- --trials 1000 [--seed 7] [--max-kills 3]
 *
 * Prints one JSON object; exits non-zero when any invariant is broken.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { seededRandom } from '../core/clock.js';
import { createRunStore } from '../core/run-store.js';
import { levelStorage } from '../storage/level.js';
import { readEffects, type Effect } from '../examples/order-crew.js';

const BIN = fileURLToPath(new URL('../bin/dev.js', import.meta.url));
const EXAMPLE = fileURLToPath(new URL('../examples/order-crew.ts', import.meta.url));

const opts = new Command()
  .option('--trials <n>', 'number of trials', (v) => Number.parseInt(v, 10), 20)
  .option('--seed <n>', 'seed of the kill schedule', (v) => Number.parseInt(v, 10), 1)
  .option('--max-kills <n>', 'kills per trial at most', (v) => Number.parseInt(v, 10), 3)
  .parse()
  .opts<{ trials: number; seed: number; maxKills: number }>();

// Seeded, so a failing kill schedule can be replayed with --seed.
const random = seededRandom(opts.seed);

interface Step {
  code: number | null;
  killed: boolean;
  lines: Array<Record<string, unknown>>;
  /** From the child's first output to its exit: the run itself, without start-up. */
  ms: number;
}

/** Runs `troupe ...args --json`, killing it with SIGKILL after `killAfterMs` when given. */
function troupe(args: string[], env: Record<string, string>, killAfterMs?: number): Promise<Step> {
  return new Promise((resolve) => {
    let started = performance.now();
    const child = spawn(process.execPath, [BIN, ...args, '--json'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
    // The kill clock starts at the child's first output, so tsx start-up time is not counted.
    let timer: NodeJS.Timeout | undefined;
    child.stdout.once('data', () => {
      started = performance.now();
      if (killAfterMs !== undefined) timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code !== null && code !== 0 && code !== 3) process.stderr.write(`troupe ${args.join(' ')} exited ${code}: ${err}\n`);
      const lines = out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
      resolve({ code, killed: signal === 'SIGKILL', lines, ms: performance.now() - started });
    });
  });
}

const resultOf = (step: Step) => step.lines.find((l) => l.type === 'result') as { output: string; status: string } | undefined;
const waitingOf = (step: Step) => step.lines.find((l) => l.type === 'waiting') as { approvalId: string } | undefined;

async function trial(index: number, referenceMs: number) {
  const root = await mkdtemp(join(tmpdir(), `troupe-trial-${index}-`));
  const db = join(root, 'db');
  const env = { TROUPE_WORLD: join(root, 'world'), TROUPE_SCRIPTED_LATENCY_MS: '40', TROUPE_TOOL_LATENCY_MS: '20' };
  const runId = `trial-${index}`;
  let kills = 0;
  let approvals = 0;
  try {
    const killAt = () => (kills < opts.maxKills && random() < 0.85 ? Math.floor(random() * referenceMs) : undefined);
    let delay = killAt();
    let step = await troupe(['run', EXAMPLE, '--db', db, '--run-id', runId], env, delay);
    for (let guard = 0; guard < 50; guard++) {
      if (step.killed) kills++;
      const waiting = waitingOf(step);
      if (waiting) {
        // The human: look the call up in the world, then confirm or re-run it.
        approvals++;
        const approval = await (async () => {
          await using storage = await levelStorage({ path: db });
          return createRunStore(storage).getApproval(waiting.approvalId);
        })();
        const key = `${runId}:${approval!.callId}`;
        const sent = readEffects(env.TROUPE_WORLD).find((e) => e.kind === 'email' && e.key === key);
        const args = sent ? ['--result', JSON.stringify({ sent: true, to: (sent.detail as { to: string }).to })] : [];
        step = await troupe(['approve', waiting.approvalId, '--db', db, ...args], env);
        continue;
      }
      if (!step.killed) break;
      delay = killAt();
      // Killed before its first checkpoint: the run never existed durably, so start it again.
      const exists = await (async () => {
        await using storage = await levelStorage({ path: db });
        return (await createRunStore(storage).getRun(runId)) !== undefined;
      })();
      step = await troupe(exists ? ['resume', runId, '--db', db] : ['run', EXAMPLE, '--db', db, '--run-id', runId], env, delay);
    }
    const result = resultOf(step);
    if (result?.status !== 'completed') process.stderr.write(`trial ${index}: not completed; last step exit ${step.code} killed=${step.killed}: ${JSON.stringify(step.lines.slice(-3))}\n`);
    const effects = readEffects(env.TROUPE_WORLD);
    const acknowledged = await (async () => {
      await using storage = await levelStorage({ path: db });
      const ledger = await createRunStore(storage).ledger(runId);
      return ledger.filter((e) => e.kind === 'tool' && e.status === 'done' && ['reserve_stock', 'hold_payment', 'send_confirmation'].includes(e.name));
    })();
    return { kills, approvals, result, effects, acknowledged, runId };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

function audit(effects: Effect[], acknowledged: Array<{ callId: string; name: string; result?: unknown }>, runId: string) {
  const count = (kind: Effect['kind'], key: string) => effects.filter((e) => e.kind === kind && e.key === key).length;
  const keys = (kind: Effect['kind']) => [...new Set(effects.filter((e) => e.kind === kind).map((e) => e.key))];
  const duplicatedIrreversible = keys('email').reduce((n, k) => n + count('email', k) - 1, 0);
  const duplicatedIdempotent = keys('reserve').reduce((n, k) => n + count('reserve', k) - 1, 0);
  const openHolds = keys('hold').reduce((n, k) => n + count('hold', k) - count('release', k), 0);
  const kindOf: Record<string, Effect['kind']> = { reserve_stock: 'reserve', hold_payment: 'hold', send_confirmation: 'email' };
  // A write is acknowledged once its result is in the ledger; its effect must still be in the world.
  const lost = acknowledged.filter((a) => {
    const kind = kindOf[a.name]!;
    const present = count(kind, `${runId}:${a.callId}`) - (kind === 'hold' ? count('release', `${runId}:${a.callId}`) : 0);
    return present < 1;
  }).length;
  return { duplicatedIrreversible, duplicatedIdempotent, openHolds, lost };
}

const started = performance.now();
const reference = await troupe(['run', EXAMPLE, '--db', join(await mkdtemp(join(tmpdir(), 'troupe-ref-')), 'db'), '--run-id', 'reference'], {
  TROUPE_WORLD: await mkdtemp(join(tmpdir(), 'troupe-ref-world-')),
  TROUPE_SCRIPTED_LATENCY_MS: '40',
  TROUPE_TOOL_LATENCY_MS: '20',
});
const referenceOutput = resultOf(reference)?.output;
if (!referenceOutput) throw new Error('the uncrashed reference run did not complete');
const referenceMs = reference.ms;

const totals = { trials: opts.trials, completed: 0, identicalOutputs: 0, duplicatedIrreversibleEffects: 0, duplicatedIdempotentEffects: 0, openHoldsBeyondOne: 0, lostAcknowledgedWrites: 0, kills: 0, approvals: 0 };
for (let i = 1; i <= opts.trials; i++) {
  const t = await trial(i, referenceMs);
  totals.kills += t.kills;
  totals.approvals += t.approvals;
  if (t.result?.status === 'completed') totals.completed++;
  if (t.result?.output === referenceOutput) totals.identicalOutputs++;
  const a = audit(t.effects, t.acknowledged, t.runId);
  totals.duplicatedIrreversibleEffects += a.duplicatedIrreversible;
  totals.duplicatedIdempotentEffects += a.duplicatedIdempotent;
  totals.openHoldsBeyondOne += Math.max(0, a.openHolds - 1);
  totals.lostAcknowledgedWrites += a.lost;
  if (process.stderr.isTTY) process.stderr.write(`\rtrial ${i}/${opts.trials}`);
}
const ok =
  totals.completed === totals.trials &&
  totals.identicalOutputs === totals.trials &&
  totals.duplicatedIrreversibleEffects === 0 &&
  totals.duplicatedIdempotentEffects === 0 &&
  totals.openHoldsBeyondOne === 0 &&
  totals.lostAcknowledgedWrites === 0;
process.stdout.write(`${JSON.stringify({ benchmark: 'crash-trials', seed: opts.seed, ...totals, ok, seconds: Math.round((performance.now() - started) / 100) / 10 }, null, 2)}\n`);
process.exitCode = ok ? 0 : 1;
