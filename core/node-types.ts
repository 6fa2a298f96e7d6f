import type { InspectionEvent, Observer } from 'xstate';
import type { ApprovalRecord } from './approvals.js';
import type { RetentionPolicy } from './retention.js';
import type { ReplayOptions, ReplayReport } from './replay/replay.js';
import type { AuditLog } from './audit-log.js';
import type { Clock, IdGenerator } from './clock.js';
import type { TroupeError } from './errors.js';
import type { Address, Envelope } from './envelope.js';
import type { RunEvent } from './events.js';
import type { RunEventsOptions } from './facts.js';
import type { HistoryEntry } from './history.js';
import type { ModelProviders } from './model.js';
import type { RunRecord } from './run-store.js';
import type { RunHost, RunResult as RunHostResult } from './run-host.js';
import type { RunnableDefinition, TypedOutput } from './runtime.js';
import type { SecretsProvider } from './secrets.js';
import type { Storage } from './storage.js';
import type { TelemetryFactory, TraceCarrier } from './telemetry.js';
import type { TransportFactory } from './transport.js';

/** The public shape of a node and its runs; `createNode` in core/node.ts builds them. */

/** Options of {@link createNode}. */
export interface NodeOptions {
  storage: Storage;
  /** Model providers by id; agents name them as `provider:model`. */
  models?: ModelProviders;
  /** Definitions this node can resume by id (unfinished runs of them resume on start). */
  crews?: readonly RunnableDefinition[];
  /** Resume unfinished runs of registered crews when the node starts. Default `true`. */
  resume?: boolean;
  /**
   * Which checkpoints of each run stay readable by `history` and `fork`: the newest
   * `keepLast` (default 100), every `keepEvery`-th (default 1000) and the first. Older ones
   * are deleted as the run goes on; conversations, journal and ledger are kept whole.
   */
  retention?: Partial<RetentionPolicy>;
  /**
   * Bytes of checkpoints queued for the disk beyond which runs wait before their next model
   * or tool call (backpressure): memory stays bounded when the disk is slower than the runs.
   * Default 64 MiB.
   */
  maxQueuedBytes?: number;
  /**
   * A run that only waits (for a human, a timer, another node) this long is unloaded from
   * memory after a final checkpoint, and loaded again by its next envelope, decision or
   * deadline; waiting runs found at start are registered without being loaded. 0 keeps every
   * run loaded. Default 60 000 ms on the wall clock; 0 with an injected `clock`, whose timers
   * a test counts and drives.
   */
  passivateAfterMs?: number;
    /** fsync every checkpoint (survives power loss, ~5x slower). Default `false`. */
  sync?: boolean;
  clock?: Clock;
  ids?: IdGenerator;
  /** An XState inspection observer for every actor the node hosts (`@statelyai/inspect`). */
  inspect?: Observer<InspectionEvent> | ((event: InspectionEvent) => void);
  /** Largest envelope accepted from outside, in encoded bytes. Default 1 MiB. */
  maxEnvelopeBytes?: number;
  /** Default timeout of {@link TroupeNode.ask}. Default 30 s. */
  askTimeoutMs?: number;
  /**
   * This node's name among its peers (`[A-Za-z0-9_-]`, default `local`). Crews place actors
   * on nodes by this name.
   */
  nodeId?: string;
  /** How this node reaches its peers (e.g. `wsTransport({...})` from `troupe/transports/ws`). */
  transport?: TransportFactory;
  /** Where tools' declared secrets are resolved at call time. Default: environment variables. */
  secrets?: SecretsProvider;
  /** Tracing of the node's runs (e.g. `otelTelemetry()` from `troupe/otel`). */
  telemetry?: TelemetryFactory;
  /**
   * The directory, outside the database, holding the audit log's key (`key`, 0600) and the
   * heads it saves after each commit (`heads`). Default `$TROUPE_AUDIT_DIR`, else
   * `<database directory>.audit` for a database on disk; none for memory storage. `false`:
   * unkeyed records, truncation only detectable against an anchor. See docs/security.md.
   */
  auditDir?: string | false;
  /**
   * On a storage many nodes share (`troupe/storage/postgres`): how many runs this node
   * executes at once. `resumeAll()` (and so `createNode({ crews })`) takes free runs of its
   * crews up to this many, and keeps taking them as runs end, are submitted or are left by
   * a node that stopped. Default 8. Unused on embedded storage, whose one process resumes everything.
   */
  concurrency?: number;
  /**
   * On a shared storage: how often this node looks for free runs, in ms, besides being woken
   * when one is submitted or released (LISTEN/NOTIFY can miss). Default 1 000.
   */
  pollMs?: number;
}


/** Options of {@link TroupeNode.run}. */
export interface RunOptions {
  input: string;
  /** Defaults to a fresh id. */
  runId?: string;
  /** Module the definition came from, recorded so `troupe resume` can load it again. */
  source?: string;
  /**
   * The trace the run joins (`{ traceparent }`, W3C Trace Context). Default: with telemetry
   * configured, the active context of the caller.
   */
  traceContext?: TraceCarrier;
}

/**
 * What a finished run produced. `output` is the final answer: its text, or with an `output`
 * schema on the crew, the validated value (typed `T`).
 */
export interface RunResult<T = string> extends Omit<RunHostResult, 'output'> {
  output: T;
}

/** A definition a node can run whose result is typed `T` (text unless it says otherwise). */
export type RunDefinition<T = string> = RunnableDefinition & TypedOutput<T>;

/** A run being executed by a node; `T` is the type of its result's `output`. */
export interface RunHandle<T = string> {
  readonly id: string;
  readonly status: RunHost['status'];
  /**
   * Resolves with the outcome when completed; rejects with `RUN_FAILED` when the run fails,
   * and with `OUTPUT_INVALID` when its recorded answer no longer fits the crew's `output` schema.
   *
   * @example
   * const run = await node.run(crew({ id: 'brief', agents: [extractor], output: Brief }), { input: url });
   * const { output } = await run.result(); // typed z.infer<typeof Brief>
   */
  result(): Promise<RunResult<T>>;
  /** Resolves with the outcome, completed or failed (a failed run's `output` is `''`). */
  settled(): Promise<RunResult<T | ''>>;
  /**
   * Typed progress events until the run ends or stops: by default from the run's start (its
   * journal first, then live), or `{ from: 'now' }` for what happens from this call on.
   * Passing an `AbortSignal` alone is the same as `{ signal }`.
   *
   * @example
   * for await (const event of run.events()) if (event.type === 'state') console.log(event.actor, event.state);
   */
  events(options?: RunEventsOptions | AbortSignal): AsyncIterable<RunEvent>;
  subscribe(listener: (event: RunEvent) => void): () => void;
  /** The human decisions the run waits for right now (none once it ended). */
  waiting(): ApprovalRecord[];
  /** Checkpoints and stops the run here; it stays resumable. */
  stop(): Promise<void>;
}

/** Options of {@link TroupeNode.resume}. */
export interface ResumeOptions {
  /** The module the run is resumed from, recorded in its run record from now on (an upgrade to new code). */
  source?: string;
}

/** Options of {@link TroupeNode.resumeAll}. */
export interface ResumeAllOptions {
  /** Called for each unfinished run left alone because another live owner executes it. */
  onSkipped?(skipped: { runId: string; holder: string; error: TroupeError }): void;
}

/** Lifecycle of a node. */
export type NodeStatus = 'running' | 'closing' | 'closed';

/** Options of {@link TroupeNode.tell} and {@link TroupeNode.ask}. */
export interface SendOptions {
  from?: Address;
  corr?: string;
  /** `tell` only: where the receiver sends its answer (an agent given a task answers there), e.g. an actor of another run. */
  replyTo?: Address;
}

/** One process's host of actors. Create with {@link createNode}. */
export interface TroupeNode extends AsyncDisposable {
  readonly status: NodeStatus;
  /** Every run's events. */
  subscribe(listener: (event: RunEvent) => void): () => void;
  /** Starts a run of `definition`; its handle's result is typed by the definition's `output` schema. */
  run<T = string>(definition: RunDefinition<T>, options: RunOptions): Promise<RunHandle<T>>;
  /**
   * Resumes every unfinished run of the registered crews (what `createNode` does unless
   * `resume: false`); subscribe first to see their events from the start. Runs another
   * live node executes are skipped (reported to `onSkipped`), not an error: the handles
   * returned are the runs this node now executes.
   */
  resumeAll(options?: ResumeAllOptions): Promise<RunHandle<unknown>[]>;
  /**
   * Records a new run of `definition` without executing it here: it starts on the node that
   * takes it (on a shared storage, any node with the crew registered and room under its
   * `concurrency`; on an embedded one, the next `resumeAll`). Returns the run id.
   *
   * @example
   * const id = await node.submit(research, { input: 'Compare LevelDB and Postgres' });
   */
  submit(definition: RunnableDefinition, options: RunOptions): Promise<string>;
  /**
   * Resumes an unfinished run from its latest checkpoint. Fails with `RUN_CLAIMED` while
   * another live node executes it: one node per run.
   */
  resume<T = string>(runId: string, definition?: RunDefinition<T>, options?: ResumeOptions): Promise<RunHandle<T>>;
  /** Every checkpoint of a run with the state of each actor at it, oldest first. */
  history(runId: string): Promise<HistoryEntry[]>;
  /**
   * Re-executes recorded run `runId` with the crew code `options.crew` in a scratch space
   * (the run and this node's storage are only read), serving every model and tool call from
   * the recording while the new code asks the same, and reports the first divergence: which
   * agent and step, what the recording had, what the new code asked for. No tool executes.
   * With `rehearse: { from, to }` the calls of model `from` are asked of `to` instead.
   *
   * @example
   * const report = await node.replay('run-42', { crew: nextVersionOfCrew });
   * if (!report.clean) console.log(report.divergences[0]); // { kind: 'conversation', agent: 'writer', step: 1, … }
   */
  replay(runId: string, options: ReplayOptions): Promise<ReplayReport>;
  /**
   * Starts a new run from checkpoint `at` of `runId`. Work recorded up to that checkpoint is
   * replayed from the journal, not redone; the original run is not touched.
   */
  fork<T = string>(runId: string, options: { at: number; runId?: string; definition?: RunDefinition<T> }): Promise<RunHandle<T>>;
  /** This node's name among its peers. */
  readonly nodeId: string;
  /**
   * Who this node object is when it claims a run (`<nodeId>.<instance>`, unique per
   * `createNode`): the holder `RUN_CLAIMED` names, and the `owner` of the run records it writes.
   */
  readonly owner: string;
  /** The node's append-only, hash-chained audit log (model and tool calls, permissions, approvals, messages). */
  readonly audit: AuditLog;
  /** The active run `runId`, if this node hosts it (`T`: its crew's output type, the caller's to state). */
  get<T = string>(runId: string): RunHandle<T> | undefined;
  /** Ids of the runs this node holds in memory now (unloaded waiting runs are not among them). */
  loadedRuns(): string[];
  /** The run index, newest first. */
  runs(): Promise<RunRecord[]>;
  /** Approvals across all runs in this storage (pending first, oldest first). */
  approvals(filter?: { status?: ApprovalRecord['status']; runId?: string }): Promise<ApprovalRecord[]>;
  /**
   * Approves a waiting tool call: it runs (with `args` if given), or, with `result`, is
   * recorded as having happened without running. The run must be active on this node, or
   * resumable from a registered crew.
   */
  approve(approvalId: string, options?: { args?: unknown; result?: unknown; reason?: string }): Promise<void>;
  /** Rejects a waiting tool call; the model is told it was not executed and why. */
  reject(approvalId: string, reason: string): Promise<void>;
  /** Sends a message to an actor address; resolves once it is durably in the mailbox. */
  tell(to: Address, type: string, payload: unknown, options?: SendOptions): Promise<void>;
  /** Sends a message and waits for the envelope that answers it (`corr` matches). */
  ask(to: Address, type: string, payload: unknown, options?: Omit<SendOptions, 'replyTo'> & { timeoutMs?: number }): Promise<Envelope>;
  /** Accepts an untrusted envelope object: validated, then routed. Throws on bad input. */
  deliver(value: unknown): Promise<void>;
  /** Accepts untrusted msgpack bytes holding one envelope. Throws on bad input. */
  receive(bytes: Uint8Array): Promise<void>;
  close(): Promise<void>;
}


