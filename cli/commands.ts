/**
 * What the `troupe` commands do. `cli/main.ts` declares the commands and imports this module
 * only when one of them runs, so `troupe --help` and `--version` never load XState, LevelDB
 * or the transport.
 * @module
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError } from 'commander';
import { createNode, type RunHandle, type TroupeNode } from '../core/node.js';
import { ErrorCode, TroupeError, type SerializedError } from '../core/errors.js';
import type { RunEvent } from '../core/events.js';
import { auditChains, createAuditLog, toJsonl } from '../core/audit-log.js';
import { auditVerify } from './audit-verify.js';
import { runHistory } from '../core/history.js';
import { ROOT_ACTOR_ID } from '../core/run-host.js';
import type { ModelProviders } from '../core/model.js';
import type { RunnableDefinition } from '../core/runtime.js';
import { createRunStore, newestRunFirst } from '../core/run-store.js';
import type { RunResult } from '../core/run-host.js';
import type { Storage } from '../core/storage.js';
import { levelStorage, repairLevelStorage } from '../storage/level.js';
import { isDatabaseUrl, nodeIdFor, openStorage, type LeaseFlags } from './open-storage.js';
import { serveControlSocket } from './control-socket.js';
import { DecidedResultSchema } from './control-protocol.js';
import { DEFAULT_DB, decideHint, resumeHint } from './hints.js';
import { loadCrewModule } from './load.js';
import { isLockedError, openForReading } from './read-database.js';
import { connectControl } from './control-client.js';
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
  /** `--lease-ms`: the lease of the runs the node claims (Postgres). */
  leaseMs?: number;
}

export { DEFAULT_DB };

/** Exit code of a command stopped by SIGINT/SIGTERM (128 + SIGINT's number, as shells report it). */
export const EXIT_INTERRUPTED = 130;

/**
 * Opens an existing database for a command that only reads it: a missing database is an
 * error (`STORAGE_NOT_FOUND`), never a new empty one; one held by a running node is read
 * through that node's control socket.
 */
async function openExisting(db: string): Promise<Storage> {
  return (await openForReading(db)).storage;
}

/** What a command's work tells {@link withNode}: the run it is about, for the interrupt hint. */
interface NodeSession {
  runId?: string;
}

/**
 * Opens the database and a node on it, serves its control socket, and runs `work`. On
 * SIGINT/SIGTERM the work is abandoned: the control socket, the node (its final
 * checkpoints) and the storage are closed, in that order, then the command says how to
 * resume the run and resolves with {@link EXIT_INTERRUPTED}.
 */
async function withNode(db: string, setup: NodeSetup, work: (node: TroupeNode, session: NodeSession) => Promise<number>, json = false): Promise<number> {
  // Registered first: a Ctrl-C while the node opens still closes it before the process ends.
  const interrupted = new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  const session: NodeSession = {};
  const outcome = await (async () => {
    await using storage = await openStorage(db, { create: setup.create, leaseMs: setup.leaseMs }).catch((error: unknown) => explainLocked(db, error));
    const transport = setup.flags ? transportFromFlags(setup.flags, (url) => process.stderr.write(`listening on ${url}\n`)) : undefined;
    const nodeId = nodeIdFor(storage, setup.flags?.nodeId);
    await using node = await createNode({
      storage,
      models: setup.models,
      resume: false,
      crews: setup.crews ?? [],
      ...(nodeId ? { nodeId } : {}),
      ...(transport ? { transport } : {}),
    });
    await using _control = await serveControlSocket({ db, node, storage }, warn);
    const working = work(node, session);
    // Abandoned on a signal: whatever it still throws once the node is closed is moot.
    working.catch(() => {});
    // `return await`: the node and storage must stay open until the work is finished.
    return await Promise.race([working.then((code) => ({ code })), interrupted.then((signal) => ({ signal }))]);
  })();
  if ('code' in outcome) return outcome.code;
  live?.stop();
  const { signal } = outcome;
  if (session.runId === undefined) {
    process.stderr.write(`\n${signal}: stopped\n`);
  } else {
    const resume = resumeHint(session.runId, db);
    if (json) process.stdout.write(`${JSON.stringify({ type: 'interrupted', runId: session.runId, signal, resume })}\n`);
    process.stderr.write(`\n${signal}: stopped; run ${session.runId} is checkpointed. Continue it with:\n  ${resume}\n`);
  }
  return EXIT_INTERRUPTED;
}

/**
 * Rethrows a failed open; when another process holds the database, names it (asked over its
 * control socket) and what still works meanwhile.
 */
async function explainLocked(db: string, error: unknown): Promise<never> {
  if (!isLockedError(error)) throw error;
  const pid = await connectControl(db, { timeoutMs: 2000 }).then(
    async (control) => {
      await control.close();
      return control.peer.pid;
    },
    () => undefined,
  );
  if (pid === undefined) throw error;
  throw new TroupeError(
    ErrorCode.STORAGE_FAILED,
    `database at ${db} is in use by process ${pid}; this command needs it to itself (stop that process first). Meanwhile runs, approvals, history, audit, inspect, approve and reject work through it`,
    { cause: error, details: { path: db, locked: true, pid } },
  );
}

const warn = (message: string) => process.stderr.write(`troupe: warning: ${message}\n`);

/** Prints one JSON value on one line: the whole output of a command that produces a result. */
const printJson = (value: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(value)}\n`);

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

/** What a run waits for, as {@link printWaiting} says it. */
interface Waiting {
  runId: string;
  approvalId: string;
  actor: string;
  tool: string;
  reason: string;
  message: string;
}

/**
 * Says which approval a run waits for and how to decide it (with the `--db` in use). With
 * `here`, this process keeps the run and takes the decision through its control socket.
 */
function printWaiting(w: Waiting, json: boolean, db: string, here = false): void {
  if (json) return void process.stdout.write(`${JSON.stringify({ type: 'waiting', runId: w.runId, approvalId: w.approvalId })}\n`);
  const how = here ? '  decide from another shell (this process keeps the run until then):\n' : '';
  process.stdout.write(`\nwaiting for approval ${w.approvalId}: ${w.actor} wants to run ${w.tool} (${w.reason})\n  ${w.message}\n${how}  ${decideHint(w.approvalId, db)}\n`);
}

/** How {@link follow} treats a run that stops to wait for a human. */
interface FollowOptions {
  json: boolean;
  db: string;
  /** Keep following it (the decision comes through the control socket) instead of exiting 3. */
  wait?: boolean;
}

async function follow(run: RunHandle, options: FollowOptions): Promise<number> {
  const { json, db } = options;
  const started = Date.now();
  let outcome: RunResult | Extract<RunEvent, { type: 'approval.requested' }>;
  if (options.wait) {
    run.subscribe((event) => {
      if (event.type !== 'approval.requested') return;
      live?.stop();
      printWaiting({ ...event, runId: run.id }, json, db, true);
    });
    outcome = await run.settled();
  } else {
    // A run waiting for a human has nothing to do here: park it (it is checkpointed) and say how to go on.
    const parked = new Promise<Extract<RunEvent, { type: 'approval.requested' }>>((resolve) =>
      run.subscribe((event) => event.type === 'approval.requested' && resolve(event)),
    );
    outcome = await Promise.race([run.settled(), parked]);
  }
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

/** How {@link continueRun} continues a run. */
interface ContinueOptions {
  json: boolean;
  global: GlobalOptions;
  /** Done to the resumed run before it is followed (e.g. a decision). */
  act?: (node: TroupeNode) => Promise<unknown>;
  flags?: NetworkFlags;
  wait?: boolean;
  /** `--crew` modules to find the run's crew among, by id (instead of the recorded module). */
  crewFiles?: readonly string[];
  leaseMs?: number;
}

/** Resumes `runId` in this process, applies `act` (e.g. a decision) and follows it to its end or next wait. */
async function continueRun(db: string, runId: string, options: ContinueOptions) {
  const { json, act, flags, wait = false } = options;
  const mod = await moduleOfRun(db, runId, options.crewFiles);
  return withNode(db, { models: mod.models, crews: [mod.definition], create: false, leaseMs: options.leaseMs, ...(flags ? { flags } : {}) }, async (node, session) => {
    session.runId = runId;
    watch(node, json, options.global, { crew: mod.definition.id, runId });
    const run = await node.resume(runId, mod.definition);
    if (run.status !== 'running' && !json) process.stdout.write(`run ${run.id} had already ${run.status}\n`);
    if (!act) {
      // Restored while waiting for a human: nothing will happen until someone decides. Read
      // at once (no await before it), so an approval the run requests later is followed instead.
      const waiting = run.waiting();
      if (waiting.length > 0) {
        live?.stop();
        if (!wait) await run.stop();
        for (const a of waiting) printWaiting({ runId, approvalId: a.id, actor: a.agentId, tool: a.tool, reason: a.reason, message: a.message }, json, db, wait);
        if (!wait) return EXIT_WAITING;
      }
    }
    const following = follow(run, { json, db, wait });
    if (act) await act(node);
    return following;
  }, json);
}

function parseAnchor(value: string): { seq: number; hash: string } {
  const [seq, hash] = value.split(':');
  if (!seq || !hash || !/^\d+$/.test(seq) || !/^[0-9a-f]{64}$/.test(hash)) throw new InvalidArgumentError('--anchor is <seq>:<64 hex hash>');
  return { seq: Number(seq), hash };
}

/** The run a pending approval belongs to; a decided one is refused before its run is touched. */
async function runOfApproval(storage: Storage, db: string, approvalId: string): Promise<string> {
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
export async function runCommand(file: string, opts: { db: string; runId?: string; input?: string; json?: boolean; wait?: boolean } & NetworkFlags & LeaseFlags, global: GlobalOptions): Promise<void> {
  // Loading a .ts crew (tsx compiling it and what it imports) can take a second or more:
  // say what is happening before it, not after.
  if (!opts.json) process.stdout.write(`loading ${file}…\n`);
  const mod = await loadCrewModule(file);
  const input = opts.input ?? mod.input;
  if (input === undefined) throw new InvalidArgumentError(`${file} exports no \`input\`; pass --input`);
  const json = opts.json ?? false;
  process.exitCode = await withNode(opts.db, { models: mod.models, crews: [mod.definition], flags: opts, create: true, leaseMs: opts.leaseMs }, async (node, session) => {
    watch(node, json, global, { crew: mod.definition.id, ...(opts.runId ? { runId: opts.runId } : {}) });
    const run = await node.run(mod.definition, { input, source: mod.path, ...(opts.runId ? { runId: opts.runId } : {}) });
    session.runId = run.id;
    return follow(run, { json, db: opts.db, wait: opts.wait ?? false });
  }, json);
}

/** `troupe resume <run-id>`: continues an unfinished run from its last checkpoint. */
export async function resumeCommand(runId: string, opts: { db: string; json?: boolean; wait?: boolean; crew?: string[] } & NetworkFlags & LeaseFlags, global: GlobalOptions): Promise<void> {
  process.exitCode = await continueRun(opts.db, runId, { json: opts.json ?? false, global, flags: opts, wait: opts.wait ?? false, leaseMs: opts.leaseMs, ...(opts.crew ? { crewFiles: opts.crew } : {}) });
}

/** `troupe node`: a long-lived node hosting the actors its peers place on it, until a signal. */
export async function nodeCommand(opts: { db: string; crew?: string[]; concurrency?: number; pollMs?: number } & NetworkFlags & LeaseFlags): Promise<void> {
  const shared = isDatabaseUrl(opts.db);
  // On a shared database a node is a worker: it takes runs from the database, peers or not.
  if (!shared && !opts.listen && !opts.peer?.length) throw new InvalidArgumentError('a node needs --listen and/or --peer (or a postgres:// --db to work on)');
  if (shared && !opts.crew?.length) throw new InvalidArgumentError('a node on a shared database needs --crew <file>: the crews whose runs it takes');
  const modules = await Promise.all((opts.crew ?? []).map((f) => loadCrewModule(f)));
  const models = Object.assign({}, ...modules.map((m) => m.models)) as ModelProviders;
  await using storage = await openStorage(opts.db, { create: true, leaseMs: opts.leaseMs });
  const nodeId = nodeIdFor(storage, opts.nodeId);
  const transport = opts.listen || opts.peer?.length ? transportFromFlags(opts, (url) => process.stdout.write(`node ${nodeId ?? 'local'} listening on ${url}\n`)) : undefined;
  await using node = await createNode({
    storage,
    models,
    crews: modules.map((m) => m.definition),
    resume: false,
    ...(nodeId ? { nodeId } : {}),
    ...(transport ? { transport } : {}),
    ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
    ...(opts.pollMs !== undefined ? { pollMs: opts.pollMs } : {}),
  });
  await using _control = await serveControlSocket({ db: opts.db, node, storage }, warn);
  node.subscribe(createProgressPrinter(process.stdout));
  node.subscribe((event) => {
    if (event.type === 'run.lost') process.stdout.write(`run ${event.runId}: lease lost, another node executes it now; stopped here\n`);
    if (event.type === 'run.refused') process.stdout.write(`run ${event.runId}: cannot run here (${describe(event.error)}); left to other nodes\n`);
  });
  const resumed = await node.resumeAll({ onSkipped: (s) => process.stdout.write(`run ${s.runId} is executed by ${s.holder}; not resumed here\n`) });
  process.stdout.write(storage.shared
    ? `node ${node.nodeId} ready: taking runs of ${modules.map((m) => m.definition.id).join(', ')} from ${storage.location} (${resumed.length} taken so far)\n`
    : `node ${node.nodeId} ready (${resumed.length} unfinished runs resumed)\n`);
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
  if (opts.json) return void printJson({ approvals });
  if (approvals.length === 0) return void process.stdout.write('no approvals waiting\n');
  for (const a of approvals) {
    process.stdout.write(`${a.id}  ${a.status.padEnd(8)} run ${a.runId}  ${a.agentId} → ${a.tool}(${JSON.stringify(a.args)})  ${a.reason}\n`);
  }
}

/** A decision as `approve`/`reject` take it: through the node's decision path wherever the run is. */
type Decision = { method: 'approve'; args?: unknown; result?: unknown; reason?: string } | { method: 'reject'; reason: string };

/**
 * Decides `approvalId`. When a running node holds the database, the decision goes to it over
 * its control socket (it resolves once the decision is durable there) and that node
 * continues the run; otherwise the run is resumed here, decided, and followed.
 */
async function decideCommand(approvalId: string, decision: Decision, opts: { db: string; json?: boolean } & LeaseFlags, global: GlobalOptions): Promise<number> {
  const json = opts.json ?? false;
  const runId = await (async () => {
    await using database = await openForReading(opts.db);
    const id = await runOfApproval(database.storage, opts.db, approvalId);
    if (!database.control) return id;
    const decided = DecidedResultSchema.parse(await database.control.call({ ...decision, approvalId }));
    const pid = database.control.peer.pid;
    const verb = decided.decision === 'approve' ? 'approved' : 'rejected';
    if (json) printJson({ type: 'decided', approvalId, runId: id, decision: decided.decision, pid });
    else process.stdout.write(`approval ${approvalId} ${verb}; run ${id} continues in process ${pid}, which holds ${opts.db}\n`);
    return undefined;
  })();
  if (runId === undefined) return 0;
  const act = (node: TroupeNode) =>
    decision.method === 'reject'
      ? node.reject(approvalId, decision.reason)
      : node.approve(approvalId, {
          ...(decision.args !== undefined ? { args: decision.args } : {}),
          ...(decision.result !== undefined ? { result: decision.result } : {}),
          ...(decision.reason ? { reason: decision.reason } : {}),
        });
  return continueRun(opts.db, runId, { json, global, act, leaseMs: opts.leaseMs });
}

/** `troupe approve <id>`: records the approval, then continues its run (here, or in the node holding the database). */
export async function approveCommand(approvalId: string, opts: { db: string; editArgs?: unknown; result?: unknown; reason?: string; json?: boolean } & LeaseFlags, global: GlobalOptions): Promise<void> {
  const decision: Decision = {
    method: 'approve',
    ...(opts.editArgs !== undefined ? { args: opts.editArgs } : {}),
    ...(opts.result !== undefined ? { result: opts.result } : {}),
    ...(opts.reason ? { reason: opts.reason } : {}),
  };
  process.exitCode = await decideCommand(approvalId, decision, opts, global);
}

/** `troupe reject <id>`: records the rejection (the model is told why), then continues the run. */
export async function rejectCommand(approvalId: string, opts: { db: string; reason: string; json?: boolean } & LeaseFlags, global: GlobalOptions): Promise<void> {
  process.exitCode = await decideCommand(approvalId, { method: 'reject', reason: opts.reason }, opts, global);
}

/** `troupe audit <run-id>` prints a run's audit trail; `troupe audit verify` checks the hash chain. */
export async function auditCommand(target: string, opts: { db: string; json?: boolean; anchor?: string; auditDir?: string; key?: boolean }): Promise<void> {
  const anchor = target === 'verify' && opts.anchor ? parseAnchor(opts.anchor) : undefined;
  await using storage = await openExisting(opts.db);
  // A shared database holds one chain per node; an embedded one, its one chain.
  const chains = storage.shared ? await auditChains(storage) : [undefined];
  if (target === 'verify') {
    if (anchor && chains.length !== 1) throw new InvalidArgumentError('--anchor names the head of one chain; this database holds one chain per node');
    let code = 0;
    for (const chain of chains) {
      const verified = await auditVerify(storage, { ...(chain !== undefined ? { chain } : {}), ...(anchor ? { anchor } : {}), ...(opts.auditDir ? { auditDir: opts.auditDir } : {}), ...(opts.key === false ? { key: false } : {}), ...(opts.json ? { json: true } : {}) });
      code = Math.max(code, verified);
    }
    process.exitCode = code;
    return;
  }
  const read = await Promise.all(chains.map((chain) => createAuditLog(storage, chain === undefined ? {} : { chain }).read({ runId: target })));
  const records = read.flat().sort((a, b) => a.ts - b.ts);
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
  if (opts.json) return void printJson({ runId, history });
  for (const h of history) {
    const states = Object.entries(h.states).map(([actor, state]) => `${actor}:${state}`).join('  ');
    process.stdout.write(`${String(h.seq).padStart(4)}  ${new Date(h.ts).toISOString()}  v${h.version}  ${states}\n`);
  }
}

/** `troupe fork <run-id> --at N`: a new run from a checkpoint of another. */
export async function forkCommand(runId: string, opts: { at: number; runId?: string; db: string; json?: boolean } & LeaseFlags, global: GlobalOptions): Promise<void> {
  const mod = await moduleOfRun(opts.db, runId);
  const json = opts.json ?? false;
  process.exitCode = await withNode(opts.db, { models: mod.models, crews: [mod.definition], create: false, leaseMs: opts.leaseMs }, async (node, session) => {
    watch(node, json, global);
    const run = await node.fork(runId, { at: opts.at, definition: mod.definition, ...(opts.runId ? { runId: opts.runId } : {}) });
    session.runId = run.id;
    return follow(run, { json, db: opts.db });
  }, json);
}

/** `troupe runs`: the run index, newest first. */
export async function runsCommand(opts: { db: string; json?: boolean }): Promise<void> {
  await using storage = await openExisting(opts.db);
  const runs = (await createRunStore(storage).listRuns()).sort(newestRunFirst);
  if (opts.json) return void printJson({ runs: runs.map(({ id, crew, status, startedAt, updatedAt, checkpoint, resumes, output, error }) => ({ id, crew, status, startedAt, updatedAt, checkpoint, resumes, output, error })) });
  if (runs.length === 0) {
    process.stdout.write(`no runs in ${opts.db}\n`);
    return;
  }
  for (const r of runs) {
    process.stdout.write(`${r.id.padEnd(28)} ${r.status.padEnd(10)} ${r.crew.padEnd(16)} started ${new Date(r.startedAt).toISOString()}  updated ${new Date(r.updatedAt).toISOString()}  checkpoints ${r.checkpoint}\n`);
  }
}

/** Bytes of the files directly in `dir` (a LevelDB directory has no subdirectories). */
async function directoryBytes(dir: string): Promise<number> {
  let bytes = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) if (entry.isFile()) bytes += (await stat(join(dir, entry.name))).size;
  return bytes;
}

const mib = (bytes: number) => `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;

/**
 * `troupe db compact`: rewrites a LevelDB directory without the space its deleted keys still
 * hold. A running node does this by itself as it deletes (`compactAfterDeletes`); this is for
 * a database no process has open, e.g. after many runs were pruned.
 */
export async function dbCompactCommand(opts: { db: string; json?: boolean }): Promise<void> {
  if (isDatabaseUrl(opts.db)) throw new InvalidArgumentError("troupe db compact compacts a LevelDB directory; Postgres reclaims the space of deleted rows with its autovacuum (or VACUUM)");
  await using storage = await levelStorage({ path: opts.db, create: false, compactAfterDeletes: 0 });
  const before = await directoryBytes(opts.db);
  await storage.compact();
  const after = await directoryBytes(opts.db);
  if (opts.json) return void printJson({ compact: { db: opts.db, bytesBefore: before, bytesAfter: after } });
  process.stdout.write(`compacted ${opts.db}: ${mib(before)} -> ${mib(after)}\n`);
}

/** `troupe db repair`: backs the directory up, runs LevelDB's repair, reports what it can read. */
export async function dbRepairCommand(opts: { db: string }): Promise<void> {
  if (isDatabaseUrl(opts.db)) throw new InvalidArgumentError('troupe db repair repairs a LevelDB directory; a Postgres database is repaired with Postgres\'s own tools');
  const { backup } = await repairLevelStorage(opts.db);
  process.stdout.write(`backed up ${opts.db} to ${backup}\n`);
  await using storage = await openExisting(opts.db);
  const runs = await createRunStore(storage).listRuns();
  const counts = new Map<string, number>();
  for (const r of runs) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
  const byStatus = [...counts].map(([status, n]) => `${n} ${status}`);
  process.stdout.write(`repaired ${opts.db}: ${runs.length} runs readable${byStatus.length ? ` (${byStatus.join(', ')})` : ''}\n`);
}
