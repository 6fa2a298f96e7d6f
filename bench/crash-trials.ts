/**
 * Crash trials: drive the order crew (tools of every effect kind) through the CLI, one child
 * process per command, SIGKILLing commands at random moments; act as the human for parked
 * calls; fork the finished run from a random checkpoint and drive the fork the same way. Then
 * check what the world saw (bench/crash-trial-audit.ts).
 *
 *   npm run crash-trials -- --trials 1000 [--seed 7] [--max-kills 3] [--only 12]
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
import { statesOf, type HistoryEntry } from '../core/history.js';
import type { ToolCall } from '../core/messages.js';
import { createRunStore } from '../core/run-store.js';
import { levelStorage } from '../storage/level.js';
import { CONFIRMED_OUTPUT, readEffects, UNCONFIRMED_OUTPUT } from '../examples/order-crew.js';
import { auditTrial, EFFECT_OF, type DrivenRun, type ForkPoint, type RunFacts, type TrialAudit } from './crash-trial-audit.js';

const EXAMPLE = fileURLToPath(new URL('../examples/order-crew.ts', import.meta.url));

const opts = new Command()
  .option('--trials <n>', 'number of trials', (v) => Number.parseInt(v, 10), 20)
  .option('--bin <path>', 'the troupe CLI to run (the test suite passes the compiled dist/bin/troupe.js)', fileURLToPath(new URL('../bin/dev.js', import.meta.url)))
  .option('--seed <n>', 'seed of the kill schedule and of the human decisions', (v) => Number.parseInt(v, 10), 1)
  .option('--max-kills <n>', 'kills per run (the source run and its fork each) at most', (v) => Number.parseInt(v, 10), 3)
  .option('--only <i>', 'run only trial i (to replay a failing trial of a seed)', (v) => Number.parseInt(v, 10))
  .parse()
  .opts<{ trials: number; seed: number; maxKills: number; only?: number; bin: string }>();

const TOOL_LATENCY_MS = 20;
const ENV = { TROUPE_SCRIPTED_LATENCY_MS: '40', TROUPE_TOOL_LATENCY_MS: String(TOOL_LATENCY_MS), TROUPE_ANNOUNCE_TOOLS: '1' };
/** Share of commands that get a kill scheduled (while the run has kills left). */
const KILL_RATE = 0.85;
/** Share of "the e-mail was not sent" verdicts on which the human rejects instead of approving. */
const REJECT_RATE = 0.25;
/** No command of this crew takes long: one that does is hung, not slow. */
const WATCHDOG_MS = 60_000;

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
}

/** Runs `troupe ...args --json` as a child process, SIGKILLing it at `moment` when given. */
function troupe(command: CommandName | 'history', args: string[], env: Record<string, string>, moment?: Moment): Promise<Step> {
  return new Promise((resolve) => {
    const spawned = performance.now();
    let firstOutput: number | undefined;
    const child = spawn(process.execPath, [opts.bin, ...args, '--json'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
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
      });
    });
  });
}

/** What is durable about `runId` right now (every child has exited). */
async function readFacts(db: string, runId: string): Promise<RunFacts> {
  await using storage = await levelStorage({ path: db });
  const store = createRunStore(storage);
  const record = await store.getRun(runId);
  const approvals = (await store.listApprovals()).filter((a) => a.runId === runId);
  return { runId, record, approvals, ledger: record ? await store.ledger(runId) : [] };
}

interface Totals {
  commands: Record<CommandName, number>;
  kills: Record<CommandName, number> & { total: number; whileLoading: number; inTool: number };
  /** Decision commands issued (a killed one may be issued again). */
  decisions: { approve: number; approveResult: number; reject: number };
  /** Approvals created: calls parked for a human. */
  parked: number;
}

interface TrialContext {
  index: number;
  db: string;
  env: Record<string, string>;
  random: () => number;
  reference: { loadMs: number; runMs: number; output: string };
  totals: Totals;
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
async function forkPointOf(db: string, source: string, at: number): Promise<Pick<ForkPoint, 'inFlight' | 'awaitingApproval' | 'sourceLedger'>> {
  await using storage = await levelStorage({ path: db });
  const store = createRunStore(storage);
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
  // Each trial has its own stream, so trial i of a seed can be replayed alone (--only i).
  const ctx: TrialContext = {
    index,
    db: join(root, 'db'),
    env: { ...ENV, TROUPE_WORLD: join(root, 'world') },
    random: seededRandom(Math.imul(opts.seed, 0x9e3779b1) ^ index),
    reference,
    totals,
    log: [],
  };
  const runId = `trial-${index}`;
  const forkId = `${runId}-fork`;
  try {
    const source = await drive(ctx, runId, { command: 'run', args: ['run', EXAMPLE, '--db', ctx.db, '--run-id', runId] });
    const outcomes = [source];
    let fork: ForkPoint | undefined;
    if (source.run.record?.status === 'completed') {
      const history = await troupe('history', ['history', runId, '--db', ctx.db], ctx.env);
      const entries = (JSON.parse(history.lines.join('\n')) as { history: HistoryEntry[] }).history;
      const at = entries[Math.floor(ctx.random() * entries.length)]!.seq;
      fork = { source: runId, at, effectsBefore: readEffects(ctx.env.TROUPE_WORLD), ...(await forkPointOf(ctx.db, runId, at)) };
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
      process.stderr.write(`\ntrial ${index} (--seed ${opts.seed} --only ${index}): ${[...broken, ...stuck].join('; ')}\n  ${ctx.log.join('\n  ')}\n`);
    }
    return { audit, runs: outcomes.length, completed, stuck, forkAtAwaitingApproval: fork?.awaitingApproval ?? false };
  } finally {
    // TROUPE_TRIAL_KEEP=1 keeps the trial's database and world to look at a failure.
    if (!process.env.TROUPE_TRIAL_KEEP) await rm(root, { recursive: true, force: true });
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
const referenceStep = await troupe('run', ['run', EXAMPLE, '--db', join(refRoot, 'db'), '--run-id', 'reference'], { ...ENV, TROUPE_WORLD: join(refRoot, 'world') });
await rm(refRoot, { recursive: true, force: true });
const referenceOutput = (referenceStep.lines.map((l) => (l.startsWith('{') ? (JSON.parse(l) as { type?: string; output?: string }) : {})).find((l) => l.type === 'result'))?.output;
if (referenceOutput !== CONFIRMED_OUTPUT) throw new Error(`the uncrashed reference run did not complete with the crew's answer: ${referenceOutput}`);
const reference = { loadMs: referenceStep.loadMs, runMs: referenceStep.runMs, output: referenceOutput };

const zero = <K extends string>(names: readonly K[]) => Object.fromEntries(names.map((n) => [n, 0])) as Record<K, number>;
const totals: Totals = {
  commands: zero(COMMANDS),
  kills: { total: 0, ...zero(COMMANDS), whileLoading: 0, inTool: 0 },
  decisions: { approve: 0, approveResult: 0, reject: 0 },
  parked: 0,
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
const indices = opts.only !== undefined ? [opts.only] : Array.from({ length: opts.trials }, (_, i) => i + 1);
for (const i of indices) {
  const t = await trial(i, reference, totals);
  const a = t.audit;
  sum.trials++;
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
  `${JSON.stringify({ benchmark: 'crash-trials', seed: opts.seed, ...sum, ...totals, notCompleted, failedTrials, ok, seconds: Math.round((performance.now() - started) / 100) / 10 }, null, 2)}\n`,
);
process.exitCode = ok ? 0 : 1;
