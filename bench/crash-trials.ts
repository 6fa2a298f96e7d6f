/**
 * Crash trials: drive the order crew (tools of every effect kind) through the CLI, one child
 * process per command, SIGKILLing commands at random moments; act as the human for parked
 * calls; fork the finished run from a random checkpoint and drive the fork the same way. Then
 * check what the world saw (bench/crash-trial-audit.ts).
 *
 *   npm run crash-trials -- --trials 1000 [--seed 7] [--max-kills 3] [--only 12] [--storage postgres]
 *
 * With `--storage postgres` every trial (and the reference run) gets a database of its own on
 * the server (`--postgres-server`, default `TROUPE_TEST_POSTGRES` or the tests' server),
 * dropped when the trial ends, and every command is given its `postgres://` URL as `--db`.
 *
 * Prints one JSON object; exits non-zero when any invariant is broken.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Command, Option } from 'commander';
import { openStorage } from '../cli/open-storage.js';
import { seededRandom } from '../core/clock.js';
import { ErrorCode, isTroupeError } from '../core/errors.js';
import { statesOf, type HistoryEntry } from '../core/history.js';
import type { ToolCall } from '../core/messages.js';
import { createRunStore, type RunStore } from '../core/run-store.js';
import { CONFIRMED_OUTPUT, readEffects, UNCONFIRMED_OUTPUT } from '../examples/order-crew.js';
import { POSTGRES_SERVER, testDatabase } from '../test/helpers/postgres-server.js';
import { auditTrial, EFFECT_OF, type DrivenRun, type ForkPoint, type RunFacts, type TrialAudit } from './crash-trial-audit.js';
import { repoFile } from './durable-step.js';

const EXAMPLE = repoFile('examples/order-crew.ts');

const opts = new Command()
  .option('--trials <n>', 'number of trials', (v) => Number.parseInt(v, 10), 20)
  .option('--bin <path>', 'the troupe CLI to run (the test suite passes the compiled dist/bin/troupe.js)', repoFile('bin/dev.js'))
  .option('--seed <n>', 'seed of the kill schedule and of the human decisions', (v) => Number.parseInt(v, 10), 1)
  .option('--max-kills <n>', 'kills per run (the source run and its fork each) at most', (v) => Number.parseInt(v, 10), 3)
  .option('--only <i>', 'run only trial i (to replay a failing trial of a seed)', (v) => Number.parseInt(v, 10))
  .addOption(new Option('--storage <kind>', 'where the runs are kept: a LevelDB directory, or a database on a Postgres server, per trial').choices(['level', 'postgres']).default('level'))
  .option('--postgres-server <url>', 'with --storage postgres: the server (a URL without a database) the trials create their databases on', POSTGRES_SERVER)
  .parse()
  .opts<{ trials: number; seed: number; maxKills: number; only?: number; bin: string; storage: 'level' | 'postgres'; postgresServer: string }>();

const TOOL_LATENCY_MS = 20;
const ENV = { TROUPE_SCRIPTED_LATENCY_MS: '40', TROUPE_TOOL_LATENCY_MS: String(TOOL_LATENCY_MS), TROUPE_ANNOUNCE_TOOLS: '1' };
/** Share of commands that get a kill scheduled (while the run has kills left). */
const KILL_RATE = 0.85;
/** Share of "the e-mail was not sent" verdicts on which the human rejects instead of approving. */
const REJECT_RATE = 0.25;
/** No command of this crew takes long: one that does is hung, not slow. */
const WATCHDOG_MS = 60_000;
/**
 * The lease the commands hold their runs with (`--lease-ms`). On Postgres a killed command
 * keeps its run claimed until its lease expires, and the next command must wait that out:
 * short, so a trial waits about a second per such kill rather than the default 15.
 */
const LEASE_MS = 1000;
/**
 * A command started this long after a kill's lease expired finds its run free: a renewal the
 * killed process sent just before it died can land a little later, never a lease later.
 */
const LEASE_SLACK_MS = LEASE_MS;
/** TROUPE_TRIAL_KEEP=1 keeps each trial's database and world to look at a failure. */
const KEEP = Boolean(process.env.TROUPE_TRIAL_KEEP);

type CommandName = 'run' | 'resume' | 'approve' | 'approveResult' | 'reject' | 'fork';
const COMMANDS: CommandName[] = ['run', 'resume', 'approve', 'approveResult', 'reject', 'fork'];

/**
 * When a command is killed: at a uniform time from its spawn over the reference start-up
 * (while tsx, the crew module, LevelDB and the run are loading), at a uniform time over the
 * reference run after its first output, or inside a tool call: a uniform time within twice
 * the tool's latency after the tool announced its start (before or after its effect).
 */
type Moment = { at: 'loading'; ms: number } | { at: 'anytime'; ms: number } | { at: 'inTool'; tool?: string; nth: number; ms: number };

interface Step {
  command: CommandName;
  code: number | null;
  killed: boolean;
  /** Where the kill landed: before the child's first output, or after. */
  killedWhile?: 'loading' | 'running';
  killedInTool: boolean;
  hung: boolean;
  lines: string[];
  stderr: string;
  /** Spawn to first output, and first output to exit. */
  loadMs: number;
  runMs: number;
  /** When it was spawned and when it exited (`performance.now()`). */
  spawnedAt: number;
  endedAt: number;
}

/** Runs `troupe ...args --json` as a child process, SIGKILLing it at `moment` when given. */
function troupe(command: CommandName | 'history', args: string[], env: Record<string, string>, moment?: Moment): Promise<Step> {
  return new Promise((resolve) => {
    const spawned = performance.now();
    let firstOutput: number | undefined;
    const lease = command === 'history' ? [] : ['--lease-ms', String(LEASE_MS)];
    const child = spawn(process.execPath, [opts.bin, ...args, ...lease, '--json'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    let partial = '';
    let err = '';
    let killedWhile: Step['killedWhile'];
    let killedInTool = false;
    let hung = false;
    let toolStarts = 0;
    const timers: NodeJS.Timeout[] = [];
    const kill = (inTool = false) => {
      if (child.exitCode !== null || child.signalCode !== null || killedWhile) return;
      killedWhile = firstOutput === undefined ? 'loading' : 'running';
      killedInTool = inTool;
      child.kill('SIGKILL');
    };
    timers.push(
      setTimeout(() => {
        hung = true;
        kill();
      }, WATCHDOG_MS),
    );
    if (moment?.at === 'loading') timers.push(setTimeout(kill, moment.ms));
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      if (firstOutput === undefined) {
        firstOutput = performance.now();
        if (moment?.at === 'anytime') timers.push(setTimeout(kill, moment.ms));
      }
      partial += chunk;
      const parts = partial.split('\n');
      partial = parts.pop()!;
      for (const line of parts) {
        lines.push(line);
        const started = /^tool (\S+) started$/.exec(line);
        if (started && moment?.at === 'inTool' && (moment.tool === undefined || moment.tool === started[1]) && ++toolStarts === moment.nth) {
          timers.push(setTimeout(() => kill(true), moment.ms));
        }
      }
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
    child.on('exit', (code, signal) => {
      for (const t of timers) clearTimeout(t);
      if (partial) lines.push(partial);
      const end = performance.now();
      const killed = signal === 'SIGKILL' && killedWhile !== undefined && !hung;
      resolve({
        command: command as CommandName,
        code,
        killed,
        ...(killed ? { killedWhile } : {}),
        killedInTool: killed && killedInTool,
        hung,
        lines,
        stderr: err,
        loadMs: (firstOutput ?? end) - spawned,
        runMs: end - (firstOutput ?? end),
        spawnedAt: spawned,
        endedAt: end,
      });
    });
  });
}

/** Reads the trial's database opened as every command opens its `--db`. */
async function readStore<T>(db: string, read: (store: RunStore) => Promise<T>): Promise<T> {
  await using storage = await openStorage(db, { create: false });
  return await read(createRunStore(storage));
}

/** What is durable about `runId` right now (every child has exited). */
async function readFacts(db: string, runId: string): Promise<RunFacts> {
  try {
    return await readStore(db, async (store) => {
      const record = await store.getRun(runId);
      const approvals = (await store.listApprovals()).filter((a) => a.runId === runId);
      return { runId, record, approvals, ledger: record ? await store.ledger(runId) : [] };
    });
  } catch (error) {
    // The first `run` was killed before it created the database (or Troupe's tables).
    if (isTroupeError(error, ErrorCode.STORAGE_NOT_FOUND)) return { runId, record: undefined, approvals: [], ledger: [] };
    throw error;
  }
}

/** A database of the trial's own, named as `--db` names it. */
interface TrialDatabase extends AsyncDisposable {
  db: string;
}

/**
 * A directory under the trial's `root`, or a fresh database on the Postgres server, dropped
 * on dispose. Its name starts with `troupe_trial_<name>`: which trial is running, to a look
 * at the server.
 */
async function trialDatabase(root: string, name: string): Promise<TrialDatabase> {
  if (opts.storage === 'level') return { db: join(root, 'db'), [Symbol.asyncDispose]: async () => {} };
  const database = await testDatabase({ server: opts.postgresServer, prefix: `troupe_trial_${name}` });
  return { db: database.url, [Symbol.asyncDispose]: () => database[Symbol.asyncDispose]() };
}

interface Totals {
  commands: Record<CommandName, number>;
  kills: Record<CommandName, number> & { total: number; whileLoading: number; inTool: number };
  /** Decision commands issued (a killed one, or one that found its run still claimed, may be issued again). */
  decisions: { approve: number; approveResult: number; reject: number };
  /** Approvals created: calls parked for a human. */
  parked: number;
  /** Commands that found their run still claimed by a killed one, and waited for its lease to expire. */
  leaseWaits: number;
  leaseWaitSeconds: number;
}

interface TrialContext {
  index: number;
  db: string;
  env: Record<string, string>;
  random: () => number;
  reference: { loadMs: number; runMs: number; output: string };
  totals: Totals;
  /** When the last killed command of the trial exited: its leases end at most `LEASE_MS` later. */
  lastKillAt?: number;
  /** One line per command, printed when the trial breaks an invariant. */
  log: string[];
}

function plan(command: CommandName, ctx: TrialContext): Moment | undefined {
  const { random } = ctx;
  if (random() >= KILL_RATE) return undefined;
  const r = random();
  // Approving a call to run is where the reported duplicate happens: kill inside it more often.
  // `approve --result` and `reject` run no tool.
  const [loading, anytime] = command === 'approve' ? [0.15, 0.3] : command === 'approveResult' || command === 'reject' ? [0.3, 1] : [0.15, 0.5];
  if (r < loading) return { at: 'loading', ms: random() * ctx.reference.loadMs };
  if (r < anytime) return { at: 'anytime', ms: random() * ctx.reference.runMs };
  // Inside a tool: the irreversible one more often than not, else the n-th tool the command starts.
  const irreversible = random() < 0.6;
  return { at: 'inTool', ...(irreversible ? { tool: 'send_confirmation' } : {}), nth: irreversible ? 1 : 1 + Math.floor(random() * 4), ms: random() * 2 * TOOL_LATENCY_MS };
}

interface Outcome {
  run: DrivenRun;
  /** Why the run did not end, when it did not. */
  stuck?: string;
}

/**
 * Drives one run to its end the way an operator would: look at what is durable, then start
 * it (when it never became durable), decide a parked call, or resume it; kill commands on the
 * way. Before each decision the human looks the call up in the world by its idempotency key.
 */
async function drive(ctx: TrialContext, runId: string, start: { command: 'run' | 'fork'; args: string[]; source?: string }): Promise<Outcome> {
  const run: DrivenRun = { runId, record: undefined, ledger: [], approvals: [], interrupted: [], decidedKeys: {}, ...(start.source ? { source: start.source } : {}) };
  let kills = 0;
  let stuck: string | undefined;
  const settle = async () => {
    Object.assign(run, await readFacts(ctx.db, runId));
    return { run, ...(stuck ? { stuck } : {}) };
  };
  for (let guard = 0; guard < 60; guard++) {
    const facts = await readFacts(ctx.db, runId);
    // After a kill: was an approved call interrupted while it ran (its new intent has no result)?
    for (const a of facts.approvals) {
      if (a.status !== 'approved' || a.decision?.result !== undefined || run.interrupted.includes(a.id)) continue;
      const entry = facts.ledger.find((e) => e.callId === a.callId);
      if (entry?.status === 'intent' && entry.ts >= (a.decidedAt ?? Infinity)) run.interrupted.push(a.id);
    }
    if (facts.record?.status === 'completed' || facts.record?.status === 'failed') return settle();
    const pending = facts.approvals.filter((a) => a.status === 'pending').sort((x, y) => x.createdAt - y.createdAt)[0];
    let command: CommandName;
    let args: string[];

    if (!facts.record) {
      // Killed before its first durable write: the run (or fork) does not exist; start it again.
      command = start.command;
      args = start.args;
    } else if (pending) {
      const intent = facts.ledger.find((e) => e.callId === pending.callId);
      const key = intent?.idempotencyKey ?? `${runId}:${pending.callId}`;
      run.decidedKeys[pending.id] = key;
      const kind = EFFECT_OF[pending.tool];
      const happened = readEffects(ctx.env.TROUPE_WORLD).find((e) => e.kind === kind && e.key === key);
      if (happened) {
        command = 'approveResult';
        args = ['approve', pending.id, '--db', ctx.db, '--result', JSON.stringify({ sent: true, to: (happened.detail as { to?: string }).to })];
      } else if (ctx.random() < REJECT_RATE) {
        command = 'reject';
        args = ['reject', pending.id, '--db', ctx.db, '--reason', 'not sent; the customer cancelled'];
      } else {
        command = 'approve';
        args = ['approve', pending.id, '--db', ctx.db];
      }
      ctx.totals.decisions[command]++;
    } else {
      command = 'resume';
      args = ['resume', runId, '--db', ctx.db];
    }
    const moment = kills < opts.maxKills ? plan(command, ctx) : undefined;
    const step = await troupe(command, args, ctx.env, moment);
    ctx.totals.commands[command]++;
    ctx.log.push(`${runId}: ${args[0]}${args[0] === 'run' ? '' : ` ${args[1]}`}${command === 'approveResult' ? ' --result' : ''} ${moment ? JSON.stringify(moment) : 'no kill'} → ${step.killed ? `killed while ${step.killedWhile}${step.killedInTool ? ' in a tool' : ''}` : `exit ${step.code}`}`);
    if (step.killed) {
      kills++;
      ctx.totals.kills.total++;
      ctx.totals.kills[command]++;
      if (step.killedWhile === 'loading') ctx.totals.kills.whileLoading++;
      if (step.killedInTool) ctx.totals.kills.inTool++;
      ctx.lastKillAt = step.endedAt;
      continue;
    }
    if (opts.storage === 'postgres' && step.code === 1 && /^troupe: \[RUN_CLAIMED\]/m.test(step.stderr)) {
      // Claimed by the command killed last (the only process that can hold it): it renewed
      // its lease at most until it died, so the run is free LEASE_MS after that. Claimed by
      // a command started well past then, the lease outlived its holder.
      const free = (ctx.lastKillAt ?? -Infinity) + LEASE_MS;
      if (step.spawnedAt >= free + LEASE_SLACK_MS) {
        stuck = `${args[0]} found the run claimed ${ctx.lastKillAt === undefined ? 'with no command killed' : `${Math.round(step.spawnedAt - ctx.lastKillAt)} ms after the last kill`}, past its ${LEASE_MS} ms lease: ${step.stderr.trim()}`;
        return settle();
      }
      const wait = Math.max(0, free - performance.now());
      ctx.totals.leaseWaits++;
      ctx.totals.leaseWaitSeconds += wait / 1000;
      ctx.log.push(`${runId}: still claimed by the killed command; waited ${Math.round(wait)} ms for its lease to expire`);
      await delay(wait);
      continue;
    }
    if (step.hung || (step.code !== 0 && step.code !== 1 && step.code !== 3) || (step.code === 1 && !/"type":"result"/.test(step.lines.join('\n')))) {
      stuck = `${args[0]} ${step.hung ? 'hung' : `exited ${step.code}`}${step.stderr ? `: ${step.stderr.trim().split('\n')[0]}` : ''}`;
      return settle();
    }
  }
  stuck = 'no end after 60 commands';
  return settle();
}

/** The tool calls agents were running at a checkpoint, and whether one was waiting for a human. */
async function forkPointOf(store: RunStore, source: string, at: number): Promise<Pick<ForkPoint, 'inFlight' | 'awaitingApproval' | 'sourceLedger'>> {
  const checkpoint = await store.checkpoint(source, at);
  const children = (checkpoint?.snapshot as { children?: Record<string, { snapshot?: { context?: { pendingCalls?: ToolCall[]; step?: number; tasksDone?: number } } }> })?.children ?? {};
  const states = statesOf(checkpoint?.snapshot, 'crew');
  const sourceLedger = await store.ledger(source);
  // In flight at the fork point: a pending call whose intent is in the fork's past. A call
  // the agent had chosen but not started there (its intent came in a later batch) is the
  // fork's to make, under its own key, like any call after the fork point.
  const startedBy = new Set(sourceLedger.filter((e) => (e.status === 'intent' ? (e.checkpoint ?? Infinity) : (e.intentAt ?? Infinity)) <= at).map((e) => e.callId));
  const inFlight: ForkPoint['inFlight'] = [];
  for (const [agentId, child] of Object.entries(children)) {
    const context = child.snapshot?.context;
    if ((states[agentId] !== 'acting' && states[agentId] !== 'awaitingApproval') || !context?.pendingCalls) continue;
    for (const call of context.pendingCalls) {
      const callId = `${agentId}/t${(context.tasksDone ?? 0) + 1}/s${context.step}/tool/${call.id}`;
      if (startedBy.has(callId)) inFlight.push({ callId, tool: call.name });
    }
  }
  return { inFlight, awaitingApproval: Object.values(states).includes('awaitingApproval'), sourceLedger };
}

interface TrialResult {
  audit: TrialAudit;
  runs: number;
  completed: boolean;
  stuck: string[];
  forkAtAwaitingApproval: boolean;
}

async function trial(index: number, reference: TrialContext['reference'], totals: Totals): Promise<TrialResult> {
  const root = await mkdtemp(join(tmpdir(), `troupe-trial-${index}-`));
  let database: TrialDatabase | undefined;
  const runId = `trial-${index}`;
  const forkId = `${runId}-fork`;
  try {
    database = await trialDatabase(root, String(index));
    // Each trial has its own stream, so trial i of a seed can be replayed alone (--only i).
    const ctx: TrialContext = {
      index,
      db: database.db,
      env: { ...ENV, TROUPE_WORLD: join(root, 'world') },
      random: seededRandom(Math.imul(opts.seed, 0x9e3779b1) ^ index),
      reference,
      totals,
      log: [],
    };
    const source = await drive(ctx, runId, { command: 'run', args: ['run', EXAMPLE, '--db', ctx.db, '--run-id', runId] });
    const outcomes = [source];
    let fork: ForkPoint | undefined;
    if (source.run.record?.status === 'completed') {
      const history = await troupe('history', ['history', runId, '--db', ctx.db], ctx.env);
      const entries = (JSON.parse(history.lines.join('\n')) as { history: HistoryEntry[] }).history;
      const at = entries[Math.floor(ctx.random() * entries.length)]!.seq;
      fork = { source: runId, at, effectsBefore: readEffects(ctx.env.TROUPE_WORLD), ...(await readStore(ctx.db, (store) => forkPointOf(store, runId, at))) };
      ctx.log.push(`fork at checkpoint ${at}: ${JSON.stringify(entries.find((e) => e.seq === at)?.states)}`);
      outcomes.push(await drive(ctx, forkId, { command: 'fork', args: ['fork', runId, '--at', String(at), '--run-id', forkId, '--db', ctx.db], source: runId }));
    }
    const audit = auditTrial({
      effects: readEffects(ctx.env.TROUPE_WORLD),
      runs: outcomes.map((o) => o.run),
      ...(fork ? { fork } : {}),
      outputs: { confirmed: reference.output, unconfirmed: UNCONFIRMED_OUTPUT },
    });
    totals.parked += outcomes.reduce((n, o) => n + o.run.approvals.length, 0);
    const completed = outcomes.length === 2 && outcomes.every((o) => o.run.record?.status === 'completed');
    const stuck = outcomes.flatMap((o) => (o.stuck ? [`${o.run.runId}: ${o.stuck}`] : o.run.record?.status === 'completed' ? [] : [`${o.run.runId}: ${o.run.record?.status ?? 'never started'}`]));
    const broken = violations(audit);
    if (!completed || broken.length > 0) {
      const kept = KEEP ? ` [kept: --db ${ctx.db}, world ${ctx.env.TROUPE_WORLD}]` : '';
      process.stderr.write(`\ntrial ${index} (--storage ${opts.storage} --seed ${opts.seed} --only ${index})${kept}: ${[...broken, ...stuck].join('; ')}\n  ${ctx.log.join('\n  ')}\n`);
    }
    return { audit, runs: outcomes.length, completed, stuck, forkAtAwaitingApproval: fork?.awaitingApproval ?? false };
  } finally {
    if (!KEEP) {
      await database?.[Symbol.asyncDispose]();
      await rm(root, { recursive: true, force: true });
    }
  }
}

/** Invariants that must be 0, by name. */
function violations(a: TrialAudit): string[] {
  const counts: Record<string, number> = {
    duplicatedIrreversibleEffects: a.duplicatedIrreversible,
    duplicatedIdempotentEffects: a.duplicatedIdempotent,
    openHoldsBeyondOne: a.openHoldsBeyondOne,
    lostAcknowledgedWrites: a.lostAcknowledgedWrites,
    duplicatedEffectsAfterApproval: a.duplicatedAfterApproval,
    approvedCallsRerunWithoutParking: a.approvedCallsRerunWithoutParking,
    rejectedCallsWithEffect: a.rejectedCallsWithEffect,
    rejectionsNotToldToModel: a.rejectionsNotToldToModel,
    forkRedidReplayedCalls: a.forkRedidReplayedCalls,
    forkRepeatedInFlightEmails: a.forkRepeatedInFlightCalls.email,
    forkRepeatedInFlightReservations: a.forkRepeatedInFlightCalls.reserve,
    unexpectedOutputs: a.unexpectedOutputs,
  };
  return Object.entries(counts).filter(([, n]) => n > 0).map(([name, n]) => `${name} ${n}`);
}

const started = performance.now();
const refRoot = await mkdtemp(join(tmpdir(), 'troupe-ref-'));
const referenceStep = await (async () => {
  await using database = await trialDatabase(refRoot, 'reference');
  return await troupe('run', ['run', EXAMPLE, '--db', database.db, '--run-id', 'reference'], { ...ENV, TROUPE_WORLD: join(refRoot, 'world') });
})().finally(() => rm(refRoot, { recursive: true, force: true }));
const referenceOutput = (referenceStep.lines.map((l) => (l.startsWith('{') ? (JSON.parse(l) as { type?: string; output?: string }) : {})).find((l) => l.type === 'result'))?.output;
if (referenceOutput !== CONFIRMED_OUTPUT) throw new Error(`the uncrashed reference run did not complete with the crew's answer: ${referenceOutput}`);
const reference = { loadMs: referenceStep.loadMs, runMs: referenceStep.runMs, output: referenceOutput };

const zero = <K extends string>(names: readonly K[]) => Object.fromEntries(names.map((n) => [n, 0])) as Record<K, number>;
const totals: Totals = {
  commands: zero(COMMANDS),
  kills: { total: 0, ...zero(COMMANDS), whileLoading: 0, inTool: 0 },
  decisions: { approve: 0, approveResult: 0, reject: 0 },
  parked: 0,
  leaseWaits: 0,
  leaseWaitSeconds: 0,
};
const sum = {
  trials: 0,
  runs: 0,
  completed: 0,
  expectedOutputs: 0,
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
  approvedCallsInterrupted: 0,
  reparkedAfterApprove: 0,
  rejections: 0,
  forksAtAwaitingApproval: 0,
};
const notCompleted: string[] = [];
const failedTrials: number[] = [];
// A trial the harness itself could not finish (a command's output it could not read, say) is
// reported with its error and counted failed; the others still run, and the summary prints.
const harnessErrors: Array<{ trial: number; error: string }> = [];
const indices = opts.only !== undefined ? [opts.only] : Array.from({ length: opts.trials }, (_, i) => i + 1);
for (const i of indices) {
  sum.trials++;
  let t: TrialResult;
  try {
    t = await trial(i, reference, totals);
  } catch (error) {
    harnessErrors.push({ trial: i, error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    failedTrials.push(i);
    continue;
  }
  const a = t.audit;
  sum.runs += t.runs;
  if (t.completed) sum.completed++;
  sum.expectedOutputs += a.completedRuns - a.unexpectedOutputs;
  sum.duplicatedIrreversibleEffects += a.duplicatedIrreversible;
  sum.duplicatedIdempotentEffects += a.duplicatedIdempotent;
  sum.openHoldsBeyondOne += a.openHoldsBeyondOne;
  sum.lostAcknowledgedWrites += a.lostAcknowledgedWrites;
  sum.duplicatedEffectsAfterApproval += a.duplicatedAfterApproval;
  sum.approvedCallsRerunWithoutParking += a.approvedCallsRerunWithoutParking;
  sum.rejectedCallsWithEffect += a.rejectedCallsWithEffect;
  sum.rejectionsNotToldToModel += a.rejectionsNotToldToModel;
  sum.forkRedidReplayedCalls += a.forkRedidReplayedCalls;
  sum.forkRepeatedInFlightCalls.email += a.forkRepeatedInFlightCalls.email;
  sum.forkRepeatedInFlightCalls.reserve += a.forkRepeatedInFlightCalls.reserve;
  sum.approvedCallsInterrupted += a.approvedCallsInterrupted;
  sum.reparkedAfterApprove += a.reparkedAfterApprove;
  sum.rejections += a.rejections;
  if (t.forkAtAwaitingApproval) sum.forksAtAwaitingApproval++;
  notCompleted.push(...t.stuck.map((s) => `trial ${i}: ${s}`));
  if (!t.completed || violations(a).length > 0) failedTrials.push(i);
  if (process.stderr.isTTY) process.stderr.write(`\rtrial ${sum.trials}/${indices.length}`);
}
const ok = failedTrials.length === 0 && sum.completed === sum.trials && sum.expectedOutputs === sum.runs;
process.stdout.write(
  `${JSON.stringify({ benchmark: 'crash-trials', storage: opts.storage, ...(opts.storage === 'postgres' ? { leaseMs: LEASE_MS } : {}), seed: opts.seed, ...sum, ...totals, leaseWaitSeconds: Math.round(totals.leaseWaitSeconds * 10) / 10, notCompleted, failedTrials, harnessErrors, ok, seconds: Math.round((performance.now() - started) / 100) / 10 }, null, 2)}\n`,
);
process.exitCode = ok ? 0 : 1;
