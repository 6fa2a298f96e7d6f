/**
 * What the `troupe` commands do. `cli/main.ts` declares the commands and imports this module
 * only when one of them runs, so `troupe --help` and `--version` never load XState, LevelDB
 * or the transport.
 * @module
 */
import { InvalidArgumentError } from 'commander';
import { createNode, type RunHandle, type TroupeNode } from '../core/node.js';
import { ErrorCode, TroupeError, type SerializedError } from '../core/errors.js';
import type { RunEvent } from '../core/events.js';
import { createAuditLog, toJsonl } from '../core/audit-log.js';
import { runHistory } from '../core/history.js';
import { ROOT_ACTOR_ID } from '../core/run-host.js';
import type { ModelProviders } from '../core/model.js';
import type { RunnableDefinition } from '../core/runtime.js';
import { createRunStore } from '../core/run-store.js';
import type { RunResult } from '../core/run-host.js';
import { levelStorage, repairLevelStorage } from '../storage/level.js';
import { loadCrewModule } from './load.js';
import type { NetworkFlags } from './network.js';
import { transportFromFlags } from './transport.js';
import { createLiveView } from './live-view.js';
import { createProgressPrinter } from './progress.js';

/** Options every command gets from the program: `--plain` is global. */
export interface GlobalOptions {
  plain?: boolean;
}

interface NodeSetup {
  models: ModelProviders;
  crews?: RunnableDefinition[];
  flags?: NetworkFlags;
  /** Whether a missing database may be created (only `run` starts one). */
  create: boolean;
}

/** Where runs are kept unless `--db` says otherwise. */
export const DEFAULT_DB = './.troupe';

/**
 * Opens an existing database for a command that only reads it, or continues what is in it:
 * a missing database is an error (`STORAGE_NOT_FOUND`), never a new empty one.
 */
const openExisting = (db: string) => levelStorage({ path: db, create: false });

/** Opens the node, runs `work`, and on SIGINT/SIGTERM checkpoints before exiting. */
async function withNode(db: string, setup: NodeSetup, work: (node: TroupeNode) => Promise<number>): Promise<number> {
  await using storage = await levelStorage({ path: db, create: setup.create });
  const transport = setup.flags ? transportFromFlags(setup.flags, (url) => process.stderr.write(`listening on ${url}\n`)) : undefined;
  await using node = await createNode({
    storage,
    models: setup.models,
    resume: false,
    crews: setup.crews ?? [],
    ...(setup.flags?.nodeId ? { nodeId: setup.flags.nodeId } : {}),
    ...(transport ? { transport } : {}),
  });
  const interrupt = (signal: NodeJS.Signals) => {
    process.stderr.write(`\n${signal}: checkpointing; continue later with \`troupe resume\`\n`);
    void node.close().then(() => storage.close()).then(() => process.exit(130));
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  // `return await`: the node and storage must stay open until the work is finished.
  return await work(node);
}

let live: ReturnType<typeof createLiveView> | undefined;

/**
 * Prints every event of the node: JSON lines, a live in-place view on a terminal (`--live`,
 * the default on a TTY), or one line per event (the first is always the run id).
 */
function watch(node: TroupeNode, json: boolean, global: GlobalOptions, header: { crew?: string; runId?: string } = {}): void {
  if (json) node.subscribe((event) => process.stdout.write(`${JSON.stringify(event)}\n`));
  else if (process.stdout.isTTY && !global.plain) {
    live = createLiveView(process.stdout, header);
    node.subscribe(live.listener);
  } else node.subscribe(createProgressPrinter(process.stdout));
}

/** Exit code of a run that stopped to wait for a human. */
const EXIT_WAITING = 3;

/** Says which approval a run waits for and how to decide it (with the `--db` in use). */
function printWaiting(w: { runId: string; approvalId: string; actor: string; tool: string; reason: string; message: string }, json: boolean, db: string): void {
  if (json) return void process.stdout.write(`${JSON.stringify({ type: 'waiting', runId: w.runId, approvalId: w.approvalId })}\n`);
  const where = db === DEFAULT_DB ? '' : ` --db ${db}`;
  process.stdout.write(
    `\nwaiting for approval ${w.approvalId}: ${w.actor} wants to run ${w.tool} (${w.reason})\n  ${w.message}\n` +
      `  troupe approve ${w.approvalId}${where} [--result JSON | --edit-args JSON]   or   troupe reject ${w.approvalId}${where} --reason TEXT\n`,
  );
}

async function follow(run: RunHandle, json: boolean, db: string): Promise<number> {
  const started = Date.now();
  // A run waiting for a human has nothing to do here: park it (it is checkpointed) and say how to go on.
  const parked = new Promise<Extract<RunEvent, { type: 'approval.requested' }>>((resolve) =>
    run.subscribe((event) => event.type === 'approval.requested' && resolve(event)),
  );
  const outcome = await Promise.race([run.settled(), parked]);
  live?.stop();
  if ('type' in outcome) {
    await run.stop();
    printWaiting({ ...outcome, runId: run.id }, json, db);
    return EXIT_WAITING;
  }
  const result: RunResult = outcome;
  const seconds = ((Date.now() - started) / 1000).toFixed(2);
  if (json) {
    process.stdout.write(`${JSON.stringify({ type: 'result', ...result })}\n`);
  } else if (result.status === 'completed') {
    process.stdout.write(`\ncompleted in ${seconds} s\n\n${result.output}\n`);
  } else {
    process.stdout.write(`\nfailed after ${seconds} s: ${describe(result.error)}\n`);
  }
  return result.status === 'completed' ? 0 : 1;
}

/**
 * The crew module of a stored run (read before the node takes the database): one of the
 * `--crew` modules, by the run's crew id, or else the module `troupe run` recorded. A part a
 * peer placed here never goes by a recorded path: that path came from the peer (older
 * versions kept it), and importing it would run the peer's choice of code.
 */
async function moduleOfRun(db: string, runId: string, crewFiles: readonly string[] = []) {
  const record = await (async () => {
    await using storage = await openExisting(db);
    // `return await`: the storage must stay open until the record is read.
    return await createRunStore(storage).requireRun(runId);
  })();
  if (crewFiles.length > 0) {
    const modules = await Promise.all(crewFiles.map((f) => loadCrewModule(f)));
    const mod = modules.find((m) => m.definition.id === record.crew);
    if (!mod) throw new TroupeError(ErrorCode.CREW_NOT_REGISTERED, `run ${runId} needs crew "${record.crew}", which none of the --crew modules defines`, { details: { runId, crew: record.crew } });
    return mod;
  }
  if (record.part) throw new InvalidArgumentError(`run ${runId} is a part hosted for node "${record.part.origin}"; pass --crew <file> with crew "${record.crew}"`);
  if (!record.source) throw new InvalidArgumentError(`run ${runId} was not started from a module; pass --crew <file> or use the API`);
  return loadCrewModule(record.source);
}

/** Resumes `runId` in this process, applies `act` (e.g. a decision) and follows it to its end or next wait. */
async function continueRun(db: string, runId: string, json: boolean, global: GlobalOptions, act?: (node: TroupeNode) => Promise<unknown>, flags?: NetworkFlags, crewFiles?: readonly string[]) {
  const mod = await moduleOfRun(db, runId, crewFiles);
  return withNode(db, { models: mod.models, crews: [mod.definition], create: false, ...(flags ? { flags } : {}) }, async (node) => {
    watch(node, json, global, { crew: mod.definition.id, runId });
    const run = await node.resume(runId, mod.definition);
    if (run.status !== 'running' && !json) process.stdout.write(`run ${run.id} had already ${run.status}\n`);
    if (!act) {
      // Restored while waiting for a human: nothing will happen until someone decides. Read
      // at once (no await before it), so an approval the run requests later is followed instead.
      const waiting = run.waiting();
      if (waiting.length > 0) {
        live?.stop();
        await run.stop();
        for (const a of waiting) printWaiting({ runId, approvalId: a.id, actor: a.agentId, tool: a.tool, reason: a.reason, message: a.message }, json, db);
        return EXIT_WAITING;
      }
    }
    const following = follow(run, json, db);
    if (act) await act(node);
    return following;
  });
}

function parseAnchor(value: string): { seq: number; hash: string } {
  const [seq, hash] = value.split(':');
  if (!seq || !hash || !/^\d+$/.test(seq) || !/^[0-9a-f]{64}$/.test(hash)) throw new InvalidArgumentError('--anchor is <seq>:<64 hex hash>');
  return { seq: Number(seq), hash };
}

/** The run a pending approval belongs to; a decided one is refused before its run is touched. */
async function runOfApproval(db: string, approvalId: string): Promise<string> {
  await using storage = await openExisting(db);
  const approval = await createRunStore(storage).getApproval(approvalId);
  if (!approval) throw new TroupeError(ErrorCode.APPROVAL_NOT_FOUND, `no approval "${approvalId}" in ${db}`);
  // Continuing the run first would print its (finished) output, as if the call ran again.
  if (approval.status !== 'pending') {
    const when = approval.decidedAt === undefined ? '' : ` at ${new Date(approval.decidedAt).toISOString()}`;
    throw new TroupeError(ErrorCode.APPROVAL_DECIDED, `approval ${approvalId} was already ${approval.status}${when}; nothing to do`, { details: { approvalId, status: approval.status } });
  }
  return approval.runId;
}

const describe = (error: SerializedError | null) => (error ? `${error.code ? `[${error.code}] ` : ''}${error.message}` : 'unknown error');

/** `troupe run <file>`: runs a crew module to completion (or to its first wait for a human). */
export async function runCommand(file: string, opts: { db: string; runId?: string; input?: string; json?: boolean } & NetworkFlags, global: GlobalOptions): Promise<void> {
  const mod = await loadCrewModule(file);
  const input = opts.input ?? mod.input;
  if (input === undefined) throw new InvalidArgumentError(`${file} exports no \`input\`; pass --input`);
  process.exitCode = await withNode(opts.db, { models: mod.models, crews: [mod.definition], flags: opts, create: true }, async (node) => {
    watch(node, opts.json ?? false, global, { crew: mod.definition.id, ...(opts.runId ? { runId: opts.runId } : {}) });
    const run = await node.run(mod.definition, { input, source: mod.path, ...(opts.runId ? { runId: opts.runId } : {}) });
    return follow(run, opts.json ?? false, opts.db);
  });
}

/** `troupe resume <run-id>`: continues an unfinished run from its last checkpoint. */
export async function resumeCommand(runId: string, opts: { db: string; json?: boolean; crew?: string[] } & NetworkFlags, global: GlobalOptions): Promise<void> {
  process.exitCode = await continueRun(opts.db, runId, opts.json ?? false, global, undefined, opts, opts.crew);
}

/** `troupe node`: a long-lived node hosting the actors its peers place on it, until a signal. */
export async function nodeCommand(opts: { db: string; crew?: string[] } & NetworkFlags): Promise<void> {
  if (!opts.listen && !opts.peer?.length) throw new InvalidArgumentError('a node needs --listen and/or --peer');
  const modules = await Promise.all((opts.crew ?? []).map((f) => loadCrewModule(f)));
  const models = Object.assign({}, ...modules.map((m) => m.models)) as ModelProviders;
  await using storage = await levelStorage({ path: opts.db });
  const transport = transportFromFlags(opts, (url) => process.stdout.write(`node ${opts.nodeId ?? 'local'} listening on ${url}\n`));
  await using node = await createNode({
    storage,
    models,
    crews: modules.map((m) => m.definition),
    resume: false,
    ...(opts.nodeId ? { nodeId: opts.nodeId } : {}),
    ...(transport ? { transport } : {}),
  });
  node.subscribe(createProgressPrinter(process.stdout));
  const resumed = await node.resumeAll({ onSkipped: (s) => process.stdout.write(`run ${s.runId} is executed by ${s.holder}; not resumed here\n`) });
  process.stdout.write(`node ${node.nodeId} ready (${resumed.length} unfinished runs resumed)\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  process.stdout.write('stopping: checkpointing hosted runs\n');
}

/** `troupe approvals`: the tool calls waiting for a human (all of them with `--all`). */
export async function approvalsCommand(opts: { db: string; all?: boolean; json?: boolean }): Promise<void> {
  await using storage = await openExisting(opts.db);
  const approvals = (await createRunStore(storage).listApprovals()).filter((a) => opts.all || a.status === 'pending');
  if (opts.json) return void process.stdout.write(`${JSON.stringify(approvals, null, 2)}\n`);
  if (approvals.length === 0) return void process.stdout.write('no approvals waiting\n');
  for (const a of approvals) {
    process.stdout.write(`${a.id}  ${a.status.padEnd(8)} run ${a.runId}  ${a.agentId} → ${a.tool}(${JSON.stringify(a.args)})  ${a.reason}\n`);
  }
}

/** `troupe approve <id>`: records the approval, then continues its run in this process. */
export async function approveCommand(approvalId: string, opts: { db: string; editArgs?: unknown; result?: unknown; reason?: string; json?: boolean }, global: GlobalOptions): Promise<void> {
  const runId = await runOfApproval(opts.db, approvalId);
  process.exitCode = await continueRun(opts.db, runId, opts.json ?? false, global, (node) =>
    node.approve(approvalId, {
      ...(opts.editArgs !== undefined ? { args: opts.editArgs } : {}),
      ...(opts.result !== undefined ? { result: opts.result } : {}),
      ...(opts.reason ? { reason: opts.reason } : {}),
    }),
  );
}

/** `troupe reject <id>`: records the rejection (the model is told why), then continues the run. */
export async function rejectCommand(approvalId: string, opts: { db: string; reason: string; json?: boolean }, global: GlobalOptions): Promise<void> {
  const runId = await runOfApproval(opts.db, approvalId);
  process.exitCode = await continueRun(opts.db, runId, opts.json ?? false, global, (node) => node.reject(approvalId, opts.reason));
}

/** `troupe audit <run-id>` prints a run's audit trail; `troupe audit verify` checks the hash chain. */
export async function auditCommand(target: string, opts: { db: string; json?: boolean; anchor?: string }): Promise<void> {
  await using storage = await openExisting(opts.db);
  const audit = createAuditLog(storage);
  if (target === 'verify') {
    const anchor = opts.anchor ? parseAnchor(opts.anchor) : undefined;
    const verdict = await audit.verify(anchor ? { anchor } : {});
    if (verdict.ok) {
      process.stdout.write(`audit log intact: ${verdict.count} records, head ${verdict.head.seq}:${verdict.head.hash}\n`);
      return;
    }
    process.stdout.write(`audit log TAMPERED: first bad record ${verdict.firstBad} (${verdict.reason}): ${verdict.message}\n`);
    process.exitCode = 1;
    return;
  }
  const records = await audit.read({ runId: target });
  if (records.length === 0 && !(await createRunStore(storage).getRun(target))) throw new TroupeError(ErrorCode.RUN_NOT_FOUND, `no run "${target}" in ${opts.db}`);
  if (opts.json) return void process.stdout.write(toJsonl(records));
  for (const r of records) {
    const data = JSON.stringify(r.data);
    process.stdout.write(`${String(r.seq).padStart(6)}  ${new Date(r.ts).toISOString()}  ${r.kind.padEnd(18)} ${r.actor.padEnd(12)} ${data.length > 140 ? `${data.slice(0, 137)}...` : data}\n`);
  }
}

/** `troupe history <run-id>`: every checkpoint of a run with each actor's state. */
export async function historyCommand(runId: string, opts: { db: string; json?: boolean }): Promise<void> {
  await using storage = await openExisting(opts.db);
  const history = await runHistory(createRunStore(storage), runId, ROOT_ACTOR_ID);
  if (opts.json) return void process.stdout.write(`${JSON.stringify(history, null, 2)}\n`);
  for (const h of history) {
    const states = Object.entries(h.states).map(([actor, state]) => `${actor}:${state}`).join('  ');
    process.stdout.write(`${String(h.seq).padStart(4)}  ${new Date(h.ts).toISOString()}  v${h.version}  ${states}\n`);
  }
}

/** `troupe fork <run-id> --at N`: a new run from a checkpoint of another. */
export async function forkCommand(runId: string, opts: { at: number; runId?: string; db: string; json?: boolean }, global: GlobalOptions): Promise<void> {
  const mod = await moduleOfRun(opts.db, runId);
  process.exitCode = await withNode(opts.db, { models: mod.models, crews: [mod.definition], create: false }, async (node) => {
    watch(node, opts.json ?? false, global);
    const run = await node.fork(runId, { at: opts.at, definition: mod.definition, ...(opts.runId ? { runId: opts.runId } : {}) });
    return follow(run, opts.json ?? false, opts.db);
  });
}

/** `troupe runs`: the run index, newest first. */
export async function runsCommand(opts: { db: string; json?: boolean }): Promise<void> {
  await using storage = await openExisting(opts.db);
  const runs = (await createRunStore(storage).listRuns()).sort((a, b) => b.startedAt - a.startedAt);
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(runs.map(({ id, crew, status, startedAt, updatedAt, checkpoint, resumes, output, error }) => ({ id, crew, status, startedAt, updatedAt, checkpoint, resumes, output, error })), null, 2)}\n`);
    return;
  }
  if (runs.length === 0) {
    process.stdout.write(`no runs in ${opts.db}\n`);
    return;
  }
  for (const r of runs) {
    process.stdout.write(`${r.id.padEnd(28)} ${r.status.padEnd(10)} ${r.crew.padEnd(16)} started ${new Date(r.startedAt).toISOString()}  updated ${new Date(r.updatedAt).toISOString()}  checkpoints ${r.checkpoint}\n`);
  }
}

/** `troupe db repair`: backs the directory up, runs LevelDB's repair, reports what it can read. */
export async function dbRepairCommand(opts: { db: string }): Promise<void> {
  const { backup } = await repairLevelStorage(opts.db);
  process.stdout.write(`backed up ${opts.db} to ${backup}\n`);
  await using storage = await openExisting(opts.db);
  const runs = await createRunStore(storage).listRuns();
  const counts = new Map<string, number>();
  for (const r of runs) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
  const byStatus = [...counts].map(([status, n]) => `${n} ${status}`);
  process.stdout.write(`repaired ${opts.db}: ${runs.length} runs readable${byStatus.length ? ` (${byStatus.join(', ')})` : ''}\n`);
}
