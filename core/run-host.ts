import { createActor, type AnyActor, type AnyActorRef, type InspectionEvent, type Observer } from 'xstate';
import { APPROVAL_DECISION, waitingRequests, type ApprovalDecision, type ApprovalRecord, type ApprovalRequest } from './approvals.js';
import type { Clock, IdGenerator } from './clock.js';
import { address, parseAddress, type Envelope } from './envelope.js';
import { ErrorCode, isTroupeError, serializeError, TroupeError, type SerializedError } from './errors.js';
import { EventHub, type RunEvent } from './events.js';
import { eventOfJournal, joinJournalAndLive, type RunEventsOptions } from './facts.js';
import type { ToolMessage } from './messages.js';
import type { ModelProviders, ModelResponse } from './model.js';
import type { JournalEntry, JournalKind, LedgerEntry, RunRecord, RunStore, StoredMail, UsageLedger } from './run-store.js';
import { createRunLedger, type RunLedger } from './run-ledger.js';
import { restoreWithoutWalkingLogs, type DeferredLog } from './snapshot-parts.js';
import { createCheckpointer, SEEN_RING, type Checkpoint, type Checkpointer } from './checkpoints.js';
import { layout } from './layout.js';
import { createRetention, DEFAULT_RETENTION, type Retention, type RetentionPolicy } from './retention.js';
import { createRunJournal, type InboundMailRow, type RunJournal } from './run-journal.js';
import { singleFlight } from './inbound-mail.js';
import { ASK_PREFIX, isAskAddress, partActorId, partNodeOf, ROOT_ACTOR_ID } from './address.js';
import { UsageTracker } from './budget.js';
import { Mailboxes } from './mailbox.js';
import { createBoundActor, type ActorRuntime, type ModelStep, type OutgoingMessage, type RunnableDefinition, type RunOutput, type ToolStep } from './runtime.js';
import type { RunClaim } from './storage.js';
import type { BlackboardAccess } from './tool.js';
import type { SecurityContext } from './security.js';
import type { BlobWriter } from './blobs.js';
import type { StorageOp } from './storage.js';
import type { WriteQueue } from './write-queue.js';
import { stateString } from './state-string.js';
import { performModelCall, performToolCall, type CallDeps } from './calls.js';
import { SystemMessage, type DeliveryReceipt, type OutboxReservation, type SpawnPayload } from './transport.js';
import { ENVELOPE_EVENT } from './protocol.js';
import type { CallGate } from './replay/gate.js';

export { ASK_PREFIX, partActorId, ROOT_ACTOR_ID } from './address.js';

/** Everything a run host needs from its node. */
export interface RunHostOptions {
  definition: RunnableDefinition;
  record: RunRecord;
  store: RunStore;
  models: ModelProviders;
  clock: Clock;
  ids: IdGenerator;
  sync: boolean;
  /** Hands an envelope leaving this node's part of the run to the node; called once it is durable. */
  route(envelope: Envelope): Promise<void>;
  /**
   * The node's peers, for envelopes leaving the run for another node: which node an envelope
   * is for (`undefined` when it stays on this node), and `Transport.reserve` on the node's
   * transport, which puts it into the transport's outbox through the run's own batch.
   */
  remote?: {
    nodeOf(envelope: Envelope): string | undefined;
    reserve(toNode: string, envelope: Envelope): OutboxReservation | undefined;
  };
  /**
   * Tells whoever holds run `runId` that this run wrote it mail (a row of its inbound mail,
   * now durable): this node drains it at once when it holds the run, a shared storage wakes
   * the holder. Rejects with `UNKNOWN_ACTOR` when no unfinished run `runId` exists.
   */
  mailFor(runId: string): Promise<void>;
  /** Checks a row of inbound mail as anything else crossing into the node (bounded, schema). */
  parseMail(value: unknown): Envelope;
  /** This node's id (where unplaced actors of runs started here live). */
  nodeId: string;
  /** The node's single, ordered write path (group commit). */
  writes: WriteQueue;
  /** Which checkpoints stay (history, fork); the rest are deleted as the run goes on. */
  retention?: RetentionPolicy;
  /** The node's claim on this run: every batch is fenced by it, so a run taken over writes nothing more. */
  claim?: RunClaim;
  /** Secrets, redaction and the audit log, shared by the node's runs. */
  security: SecurityContext;
  /** Moves large strings of snapshots to content-addressed keys. */
  blobs: BlobWriter;
  inspect?: Observer<InspectionEvent> | ((event: InspectionEvent) => void);
  /** Node-wide event fan-out. */
  events: EventHub<RunEvent>;
  /** A replay's scratch run: every call goes through this gate (core/replay/gate.ts). */
  gate?: CallGate;
}


/** Reads of a restore that its caller issued early, beside the checkpoint read (see `node.ts`). */
export interface RestoreReads {
  /** Approvals of the run, among others (`all`) or read through the run's index (`index`). */
  approvals: Promise<ApprovalRecord[]>;
  approvalsFrom: 'all' | 'index';
  outbox: Promise<Envelope[]>;
  inbound: Promise<StoredMail[]>;
}

/** What a finished run produced. */
export interface RunResult {
  runId: string;
  status: 'completed' | 'failed';
  output: string;
  error: SerializedError | null;
}

/**
 * Hosts one run: its lifecycle (start, restore, finish, stop), its root actor and the
 * mailboxes of its actors, and the kernel's side of the actors' runtime. What a macrostep
 * produces goes into the run's journal (core/run-journal.ts); after the macrostep the
 * checkpointer (core/checkpoints.ts) adds the records of the actors that changed, and the
 * journal seals it all into ONE batch.
 */
export class RunHost implements ActorRuntime {
  readonly runId: string;
  readonly clock: Clock;
  /** Live events of this run (see {@link events} for the journal-joined view). */
  readonly liveEvents = new EventHub<RunEvent>();
  readonly record: RunRecord;
  status: 'running' | 'completed' | 'failed' | 'stopped' = 'running';

  readonly #o: RunHostOptions;
  #actor!: AnyActor;
  readonly #mailboxes = new Mailboxes();
  readonly #ledger: RunLedger;
  readonly #lastState = new Map<string, string>();
  readonly #waiting = new Map<string, ApprovalRecord>();
  /** Approvals this host decided (or found decided), so a second decision is told so. */
  readonly #decided = new Map<string, ApprovalRecord['status']>();
  readonly #decidedRequests = new Set<string>();
  readonly #usage: UsageTracker;
  readonly #calls: CallDeps;
  #journal: RunJournal;
  readonly #checkpointer: Checkpointer;
  readonly #retention: Retention;
  /** The root actor's address inside the run: `crew`, or `_part.<node>` on a remote part. */
  readonly rootId: string;
  readonly #locals: Set<string>;
  readonly #seen: string[] = [];
  readonly #seenSet = new Set<string>();
  /** Ids accepted since the last checkpoint, with their index in the persisted ring. */
  #seenNew: Array<{ index: number; id: string }> = [];
  #seenCount = 0;
  #checkpointSeq = 0;
  #captureScheduled = false;
  #deliveryScheduled = false;
  /** Direct children of the root with a snapshot event since the last capture. */
  #touched = new Set<string>();
  #inFlight = 0;
  #writesInFlight = 0;
  #lastActive = 0;
  #writeChain: Promise<void> = Promise.resolve();
  /** Rows that could not be read as envelopes: reported once, left where they are. */
  readonly #unreadable = new Set<string>();
  /** Per node, the ids of envelopes of this run kept under `rout:` that the node has yet to take. */
  #unrouted = new Map<string, Set<string>>();
  #writeError: unknown;
  /**
   * Conversations the restore left unread, by actor, with the checkpoint they are of and the
   * read under way: each is read back when its actor first gets work (see {@link RunHost.#ready}).
   */
  readonly #deferred = new Map<string, { logs: DeferredLog[]; seq: number; filling?: Promise<void> }>();
  #resultPromise: Promise<RunResult>;
  #settle!: (result: RunResult) => void;

  constructor(options: RunHostOptions) {
    this.#o = options;
    this.runId = options.record.id;
    this.clock = options.clock;
    this.record = options.record;
    this.#resultPromise = new Promise((resolve) => (this.#settle = resolve));
    this.#lastActive = options.clock.now();
    this.#usage = new UsageTracker(options.definition.budgets);
    this.#ledger = createRunLedger({
      source: { one: (callId) => options.store.ledgerEntry(this.runId, callId), all: () => options.store.ledger(this.runId) },
      // Only names no manifest listed reach here (a manifest lists them cumulatively).
      recall: async (names) => void (await options.security.recall(names)),
    });
    this.#calls = {
      runId: this.runId,
      clock: this.clock,
      models: options.models,
      usage: this.#usage,
      security: options.security,
      ledger: this.#ledger,
      running: () => this.status === 'running',
      record: (entry) => this.#record(entry),
      journal: (kind, actor, data) => this.#fact(kind, actor, data),
      emit: (event, seq) => this.#emit(event, seq),
      checkpoint: () => this.#durableSoon(),
      room: () => this.#o.writes.room(),
      blackboard: (agentId) => this.#blackboard(agentId),
      ...(options.gate ? { gate: options.gate } : {}),
    };
    const part = options.record.part;
    const def = options.definition;
    this.rootId = part ? partActorId(options.nodeId) : ROOT_ACTOR_ID;
    this.#journal = this.#newJournal(0);
    this.#retention = createRetention(this.runId, options.retention ?? DEFAULT_RETENTION);
    this.#checkpointer = createCheckpointer({ runId: this.runId, rootId: this.rootId, machine: { id: def.id, version: def.version }, blobs: options.blobs, redact: options.security.redact });
    this.#locals = new Set(
      part ? [...part.actors, this.rootId] : [ROOT_ACTOR_ID, ...def.actorIds.filter((a) => (def.placement?.[a] ?? options.nodeId) === options.nodeId)],
    );
  }

  #newJournal(journalSeq: number): RunJournal {
    return createRunJournal({ runId: this.runId, clock: this.clock, redact: this.#o.security.redact, audit: this.#o.security.audit, journalSeq, reserve: (envelope) => this.#reserve(envelope) });
  }

  /**
   * An envelope for another node goes into the transport's outbox with the run's batch,
   * unless mail of this run for that node is still on the way through the node (kept under
   * `rout:`, handed over once durable): the newer envelope would overtake it.
   */
  #reserve(envelope: Envelope): OutboxReservation | undefined {
    const toNode = this.#o.remote?.nodeOf(envelope);
    if (toNode === undefined) return undefined;
    const reservation = this.#unrouted.has(toNode) ? undefined : this.#o.remote!.reserve(toNode, envelope);
    if (!reservation) this.#unroutedFor(envelope, toNode);
    return reservation;
  }

  /** Counts `envelope` as mail for `toNode` that the node has yet to take (see {@link RunHost.#reserve}). */
  #unroutedFor(envelope: Envelope, toNode: string): void {
    const ids = this.#unrouted.get(toNode) ?? new Set<string>();
    this.#unrouted.set(toNode, ids.add(envelope.id));
  }

  #routed(envelope: Envelope): void {
    for (const [toNode, ids] of this.#unrouted) {
      if (!ids.delete(envelope.id)) continue;
      if (ids.size === 0) this.#unrouted.delete(toNode);
      return;
    }
  }

  /** Whether `actorId` of this run lives on this node. */
  isLocal(actorId: string): boolean {
    return this.#locals.has(actorId);
  }

  /** The node that hosts `actorId` of this run. */
  nodeOf(actorId: string): string {
    if (this.#locals.has(actorId)) return this.#o.nodeId;
    const partNode = partNodeOf(actorId);
    if (partNode !== undefined) return partNode;
    const placed = this.#o.definition.placement?.[actorId];
    return placed ?? this.record.part?.origin ?? this.#o.nodeId;
  }

  /** Nodes other than this one that host actors of the run. */
  #remoteNodes(): string[] {
    if (this.record.part) return [this.record.part.origin];
    return [...new Set(Object.values(this.#o.definition.placement ?? {}))].filter((n) => n !== this.#o.nodeId);
  }

  #createMachine() {
    const part = this.record.part;
    if (!part) return this.#o.definition.createMachine(this, { isLocal: (a) => this.isLocal(a) });
    if (!this.#o.definition.createPartMachine) throw new TypeError(`crew "${this.#o.definition.id}" cannot host a part of a run on another node`);
    return this.#o.definition.createPartMachine(this, part.actors);
  }

  /** Starts a fresh run with `input`. */
  start(input: string): void {
    this.#emit(
      { type: 'run.started', runId: this.runId, crew: this.record.crew },
      this.#fact('run.started', this.rootId, { input, crew: this.record.crew, version: this.record.version, ...(this.record.part ? { part: this.record.part } : {}) }),
    );
    if (!this.record.part) {
      // Remote nodes are told first: per-pair order puts the spawn before any task for them.
      for (const node of this.#remoteNodes()) {
        const actors = this.#o.definition.actorIds.filter((a) => this.#o.definition.placement?.[a] === node);
        const payload: SpawnPayload = { crew: this.record.crew, version: this.record.version, input, origin: this.#o.nodeId, actors, ...(this.record.source ? { source: this.record.source } : {}), ...(this.record.trace ? { trace: this.record.trace } : {}) };
        this.#journal.leave(this.#systemEnvelope(node, SystemMessage.spawn, payload));
      }
    }
    this.#boot(createBoundActor(this, () => createActor(this.#createMachine(), { input: { input }, systemId: this.rootId, inspect: this.#inspect })));
  }

  #systemEnvelope(node: string, type: string, payload: unknown): Envelope {
    return { id: this.newId('env'), from: address(this.runId, this.rootId), to: address(this.runId, partActorId(node)), type, payload, seq: 0, ts: this.clock.now() };
  }

  /** Restores the run from `checkpoint`, with the ledger and undelivered mail from storage. */
  async restore(checkpoint: Checkpoint, reads?: RestoreReads): Promise<void> {
    const { store } = this.#o;
    // The manifest names every secret the run's calls resolved, so the ledger stays in
    // storage (core/run-ledger.ts); a checkpoint that does not (written before it did, or
    // by a migration) gets the whole ledger read back, which also yields the names.
    if (checkpoint.secrets) this.#ledger.restored(checkpoint.secrets);
    else for (const entry of await store.ledger(this.runId)) this.#ledger.set(entry);
    // Independent reads, issued together: a resume waits for one round of them.
    const undelivered = Object.entries(checkpoint.mailboxSeq).filter(([actorId, seq]) => seq > (checkpoint.cursors[actorId] ?? 0));
    const [indexed, unrouted, inbound, mail] = await Promise.all([
      reads?.approvals ?? store.runApprovals(this.runId),
      reads?.outbox ?? store.outbox(this.runId),
      reads?.inbound ?? store.inboundMail(this.runId),
      Promise.all(undelivered.map(([actorId]) => store.mailboxAfter(this.runId, actorId, checkpoint.cursors[actorId] ?? 0))),
    ]);
    // Checkpointed before runs indexed their approvals: they are found among all of them,
    // this once, and indexed by the batch of the next checkpoint, which says so.
    const unindexed = !checkpoint.approvalIndex;
    const approvals = unindexed && reads?.approvalsFrom !== 'all' ? await store.listApprovals() : indexed;
    for (const approval of approvals) {
      if (approval.runId !== this.runId) continue;
      if (approval.status === 'pending') this.#waiting.set(approval.id, approval);
      else {
        this.#decided.set(approval.id, approval.status);
        this.#decidedRequests.add(approval.requestId ?? approval.id);
      }
    }
    // Replayed results never resolve their secrets again, so this process's redactor would
    // not know them: resolve every secret the run used before anything is written.
    const names = this.#ledger.secretNames;
    const unavailable = names.size > 0 ? await this.#o.security.recall(names) : [];
    this.#journal = this.#newJournal(checkpoint.journalSeq);
    if (unindexed) for (const approval of approvals) if (approval.runId === this.runId) this.#journal.put(layout.runApproval(this.runId, approval.id), 1);
    this.#checkpointSeq = checkpoint.seq;
    this.#usage.restore(checkpoint.usage);
    for (const id of checkpoint.seen ?? []) this.#remember(id);
    this.#seenCount = this.#seen.length;
    // The arrays rebuilt from logs are not written again, nor the records of actors that did not change since.
    this.#checkpointer.seed(checkpoint);
    for (const deferred of checkpoint.deferred ?? []) {
      const entry = this.#deferred.get(deferred.actorId) ?? { logs: [], seq: checkpoint.seq };
      entry.logs.push(deferred);
      this.#deferred.set(deferred.actorId, entry);
    }
    for (const [actorId, version] of Object.entries(checkpoint.recordVersions ?? {})) this.#retention.wrote(actorId, version);
    const pending: Record<string, Envelope[]> = {};
    undelivered.forEach(([actorId], i) => (pending[actorId] = mail[i]!));
    this.record.resumes += 1;
    this.#emit({ type: 'run.resumed', runId: this.runId, crew: this.record.crew, checkpoint: checkpoint.seq }, this.#fact('run.resumed', this.rootId, { checkpoint: checkpoint.seq, ...(unavailable.length ? { secretsUnavailable: unavailable } : {}) }));
    const actor = restoreWithoutWalkingLogs(checkpoint.snapshot, checkpoint.arrays ?? [], () => createBoundActor(this, () => createActor(this.#createMachine(), { snapshot: checkpoint.snapshot as never, systemId: this.rootId, inspect: this.#inspect })));
    this.#checkpointer.restored(actor, checkpoint);
    this.#boot(actor);
    // A request an actor waits on with no approval of this run behind it (the run is a fork
    // of a waiting one): it gets one, or nobody could ever decide it.
    const known = new Set([...this.#waiting.values()].map((a) => a.requestId ?? a.id));
    for (const { actorId, request } of waitingRequests(checkpoint.snapshot)) {
      if (!known.has(request.id) && !this.#decidedRequest(request.id)) this.requestApproval(actorId, request, this.newId('approval'));
    }
    this.#mailboxes.restore(checkpoint, pending);
    this.#acceptRows(inbound);
    this.#scheduleDelivery();
    // Mail that was durable but not yet handed on when the process stopped (at least once).
    for (const envelope of unrouted) {
      const toNode = this.#o.remote?.nodeOf(envelope);
      if (toNode !== undefined) this.#unroutedFor(envelope, toNode);
      this.#routeOut(envelope);
    }
  }

  #boot(actor: AnyActor): void {
    this.#actor = actor;
    actor.subscribe({
      next: (snapshot) => {
        if (snapshot.status === 'done') this.#finish(snapshot.output as RunOutput);
      },
      error: (error) => this.#finish({ status: 'failed', output: '', error: serializeError(error) }),
    });
    actor.start();
    const snapshot = actor.getSnapshot();
    if (snapshot.status === 'done') this.#finish(snapshot.output as RunOutput);
    else this.#scheduleCapture();
  }

  /**
   * The run's events: by default from its start (the journal first, then live), or with
   * `from: 'now'` only what happens from this call on. Ends when the run ends or stops.
   */
  events(options: RunEventsOptions = {}): AsyncGenerator<RunEvent> {
    const live = this.liveEvents.iterate(options.signal);
    if (options.from === 'now') return live;
    // Copied now, before the read: an entry leaves `#recent` only once it is in storage.
    const recent = [...this.#journal.recent];
    const redact = this.#o.security.redact;
    return joinJournalAndLive(
      (entry) => redact(eventOfJournal(this.runId, this.record.crew, entry)),
      async () => [...(await this.#o.store.journal(this.runId)), ...recent],
      live,
    );
  }

  /** Resolves when the run completes; rejects with `RUN_FAILED` when it fails. */
  async result(): Promise<RunResult> {
    const result = await this.#resultPromise;
    if (result.status === 'failed') {
      throw new TroupeError(ErrorCode.RUN_FAILED, `run ${this.runId} failed: ${result.error?.message ?? 'unknown error'}`, {
        details: { runId: this.runId, error: result.error },
      });
    }
    return result;
  }

  /** Writes a checkpoint now; resolves once it is durable. */
  checkpointNow(): Promise<void> {
    return this.status === 'running' ? this.#capture() : this.#writeChain;
  }

  /** Resolves with the outcome, whatever it is. */
  settled(): Promise<RunResult> {
    return this.#resultPromise;
  }

  /** The live root actor (for inspection and tests). */
  get actor(): AnyActorRef {
    return this.#actor;
  }

  // ---- ActorRuntime ------------------------------------------------------------------

  newId(prefix: string): string {
    return this.#o.ids(prefix);
  }

  post(from: string, message: OutgoingMessage): void {
    if (this.status !== 'running') return;
    // Inside a run, addresses stay relative (`writer`, not `<runId>/writer`): snapshots then
    // hold no run id, so a checkpoint can be forked into a new run unchanged.
    const local = (a: string) => {
      const { runId, actorId } = parseAddress(a);
      return runId === undefined || runId === this.runId ? actorId : a;
    };
    const envelope: Envelope = {
      id: this.newId('env'),
      from: local(from),
      to: local(message.to),
      type: message.type,
      payload: message.payload,
      ...(message.corr ? { corr: message.corr } : {}),
      ...(message.replyTo ? { replyTo: local(message.replyTo) } : {}),
      seq: 0,
      ts: this.clock.now(),
    };
    const seq = this.#fact('message', from, { id: envelope.id, to: envelope.to, type: envelope.type, corr: envelope.corr });
    this.#emit({ type: 'message', runId: this.runId, from: this.#qualify(envelope.from), to: this.#qualify(envelope.to), messageType: envelope.type }, seq);
    if (this.isLocal(envelope.to)) this.#enqueue(envelope.to, envelope);
    else {
      // Leaving the run: the receiver needs full addresses to answer.
      this.#journal.leave({
        ...envelope,
        to: this.#qualify(envelope.to),
        from: this.#qualify(envelope.from),
        ...(envelope.replyTo ? { replyTo: this.#qualify(envelope.replyTo) } : {}),
      });
    }
    this.#scheduleCapture();
  }

  #qualify(a: string): string {
    return a.includes('/') ? a : address(this.runId, a);
  }

  /** Accepts an envelope from outside the run (validated by the node); resolves once durable. */
  accept(envelope: Envelope, receipt?: DeliveryReceipt): Promise<void> {
    // The transport's "delivered up to here" goes in the batch that makes the envelope durable.
    if (receipt) this.#journal.raw(receipt.takeCursorOps());
    // A redelivery (at-least-once transports, a re-sent outbox) is acknowledged, not processed.
    if (this.#seenSet.has(envelope.id)) {
      if (!receipt) return this.#writeChain;
    } else {
      this.#remember(envelope.id);
      this.#seenNew.push({ index: this.#seenCount++, id: envelope.id });
      this.#enqueue(parseAddress(envelope.to).actorId, envelope);
    }
    return this.#durableSoon();
  }

  /**
   * Moves the run's inbound mail into its mailboxes: each row is deleted by the batch that
   * makes its envelope the mailbox's, so it is accepted once whatever crashes; an id seen
   * before (a second drain of the same row) is only deleted. Resolves once that is durable.
   */
  readonly drainMail = singleFlight(async () => {
    if (this.status !== 'running') return;
    const rows = await this.#o.store.inboundMail(this.runId);
    if (this.status !== 'running') return;
    await this.#acceptRows(rows);
  });

  #acceptRows(rows: readonly StoredMail[]): Promise<void> | undefined {
    let durable: Promise<void> | undefined;
    for (const { key, value, unreadable } of rows) {
      let envelope: Envelope;
      try {
        if (unreadable) throw unreadable;
        envelope = this.#o.parseMail(value);
        if (parseAddress(envelope.to).runId !== this.runId) throw new TroupeError(ErrorCode.INVALID_ENVELOPE, `addressed to ${envelope.to}, not to this run`);
      } catch (error) {
        // Another writer's row: reported, never deleted (a damaged database is not overwritten).
        if (!this.#unreadable.has(key)) {
          this.#unreadable.add(key);
          this.#fact('message', this.rootId, { deadLetter: true, key, reason: `unreadable inbound mail: ${(error as Error).message}` });
          this.#scheduleCapture();
        }
        continue;
      }
      durable = this.accept(envelope, { seq: 0, takeCursorOps: () => [{ type: 'del', key }] });
      // One capture makes them all durable; a failed one stops the run, which says so itself.
      durable.catch(() => {});
    }
    return durable;
  }

  /** Resolves once everything recorded so far is durable: it joins the capture of this macrostep. */
  #durableSoon(): Promise<void> {
    const durable = this.#journal.durable();
    this.#scheduleCapture();
    return durable;
  }

  #remember(id: string): void {
    this.#seen.push(id);
    this.#seenSet.add(id);
    // The same bound as the persisted ring, so a restart forgets nothing it deduplicated.
    if (this.#seen.length > SEEN_RING) this.#seenSet.delete(this.#seen.shift()!);
  }

  /** Hands an envelope to the node; once it is, its durable outbox copy is dropped. */
  #routeOut(envelope: Envelope): void {
    void this.#o.route(envelope).finally(() => this.#routed(envelope)).then(
      () => {
        if (isAskAddress(envelope.to)) return;
        this.#journal.raw([{ type: 'del', key: layout.routed(this.runId, envelope.id) }]);
        this.#scheduleCapture();
      },
      () => {
        // Undeliverable (no such actor or node): journaled, and not retried forever.
        this.#fact('message', this.rootId, { deadLetter: true, id: envelope.id, to: envelope.to, type: envelope.type });
        this.#journal.raw([{ type: 'del', key: layout.routed(this.runId, envelope.id) }]);
        this.#scheduleCapture();
      },
    );
  }

  /** Tells the holders of the runs this batch wrote mail for; a run that does not exist (or ended) gets none. */
  #mailOut(rows: readonly InboundMailRow[]): void {
    if (rows.length === 0) return;
    for (const runId of new Set(rows.map((row) => row.runId))) {
      void this.#o.mailFor(runId).catch((error: unknown) => {
        if (this.status !== 'running' || !isTroupeError(error, ErrorCode.UNKNOWN_ACTOR)) return;
        for (const { key, envelope } of rows.filter((row) => row.runId === runId)) {
          this.#fact('message', this.rootId, { deadLetter: true, id: envelope.id, to: envelope.to, type: envelope.type });
          this.#journal.raw([{ type: 'del', key }]);
        }
        this.#scheduleCapture();
      });
    }
  }

  callModel(agentId: string, step: ModelStep, signal: AbortSignal): Promise<ModelResponse> {
    // A call restored in flight sends the conversation the restore deferred: the same array.
    return this.#busyWhenReady(agentId, () => performModelCall(this.#calls, agentId, step, signal));
  }

  /** `work`, once `agentId`'s conversation is read back (at once when it was not deferred), counted as in flight. */
  #busyWhenReady<T>(agentId: string, work: () => Promise<T>): Promise<T> {
    const ready = this.#ready(agentId);
    return this.#busy(ready ? ready.then(work) : work());
  }

  /** Counts `work` as in flight until it settles: a run with work in flight is never unloaded. */
  #busy<T>(work: Promise<T>): Promise<T> {
    this.#inFlight += 1;
    this.#lastActive = this.clock.now();
    return work.finally(() => {
      this.#inFlight -= 1;
      this.#lastActive = this.clock.now();
    });
  }

  /**
   * Whether the run only waits (for a human, a timer, another node) and since when: no model
   * or tool call in flight, nothing to deliver or write, no actor running anything but a
   * durable timer. `wakeAt` is the earliest timer deadline. `undefined` while it works.
   */
  quiescence(): { since: number; wakeAt: number | undefined } | undefined {
    if (this.status !== 'running' || this.#inFlight > 0 || this.#captureScheduled || this.#deliveryScheduled || this.#journal.dirty || this.#writesInFlight > 0) return undefined;
    const idle = this.#actorsIdle();
    return idle ? { since: this.#lastActive, wakeAt: idle.wakeAt } : undefined;
  }

  /**
   * Whether no actor runs anything but a durable timer (`wakeAt`: the earliest deadline).
   * Actors that wait on a timer say so with a numeric `input.deadline`; any other invoked
   * actor with an input (a promise) is work in progress.
   */
  #actorsIdle(): { wakeAt: number | undefined } | undefined {
    let wakeAt: number | undefined;
    const walk = (ref: { getSnapshot(): unknown }): boolean => {
      const snapshot = ref.getSnapshot() as { status?: string; input?: { deadline?: unknown }; children?: Record<string, { getSnapshot(): unknown }> };
      if (snapshot?.status === 'active' && snapshot.input !== undefined && !('value' in snapshot)) {
        const deadline = snapshot.input?.deadline;
        if (typeof deadline !== 'number') return false;
        wakeAt = wakeAt === undefined ? deadline : Math.min(wakeAt, deadline);
      }
      for (const child of Object.values(snapshot?.children ?? {})) if (!walk(child)) return false;
      return true;
    };
    return walk(this.#actor) ? { wakeAt } : undefined;
  }

  /** Journal entries not yet durable, for a reader joining the journal with live events. */
  recentJournal(): JournalEntry[] {
    return [...this.#journal.recent];
  }

  /** Model use so far, in total and per agent. */
  get usage(): UsageLedger {
    return structuredClone(this.#usage.ledger);
  }

  runTool(agentId: string, step: ToolStep, signal: AbortSignal): Promise<ToolMessage> {
    // The results join the conversation when the calls return: it must be read back by then.
    return this.#busyWhenReady(agentId, () => performToolCall(this.#calls, agentId, step, signal));
  }

  requestApproval(agentId: string, request: ApprovalRequest, recordId = request.id): void {
    const record: ApprovalRecord = {
      ...request,
      id: recordId,
      ...(recordId !== request.id ? { requestId: request.id } : {}),
      runId: this.runId,
      agentId,
      status: 'pending',
      createdAt: this.clock.now(),
    };
    this.#waiting.set(record.id, record);
    this.#journal.put(layout.approval(record.id), record);
    this.#journal.put(layout.runApproval(this.runId, record.id), 1);
    const seq = this.#fact('approval.requested', agentId, { approvalId: record.id, callId: record.callId, tool: record.tool, reason: record.reason, message: record.message });
    // Announced once durable, so whoever reacts to the event can already decide on it.
    this.#journal.afterCommit(() =>
      this.#emit({ type: 'approval.requested', runId: this.runId, actor: agentId, approvalId: record.id, tool: record.tool, reason: record.reason, message: record.message }, seq),
    );
    this.#scheduleCapture();
  }

  /** Whether a decided approval of this run answered the request `requestId` (its decision is on its way). */
  #decidedRequest(requestId: string): boolean {
    return this.#decidedRequests.has(requestId);
  }

  /** Approvals this run waits for. */
  get pendingApprovals(): ApprovalRecord[] {
    return [...this.#waiting.values()];
  }

  /**
   * Delivers a human decision to the waiting agent. The decided record and the envelope
   * carrying it are written in the same batch; resolves once durable.
   */
  decide(approvalId: string, decision: ApprovalDecision): Promise<void> {
    const record = this.#waiting.get(approvalId);
    if (!record) {
      const status = this.#decided.get(approvalId);
      // Two decisions racing: the first one won, and the second is told that, not "not found".
      if (status) throw new TroupeError(ErrorCode.APPROVAL_DECIDED, `approval ${approvalId} was already ${status}`, { details: { approvalId, status } });
      throw new TroupeError(ErrorCode.APPROVAL_NOT_FOUND, `run ${this.runId} is not waiting for approval ${approvalId}`, { details: { approvalId } });
    }
    this.#waiting.delete(approvalId);
    const decided: ApprovalRecord = { ...record, status: decision.decision === 'approve' ? 'approved' : 'rejected', decidedAt: this.clock.now(), decision };
    this.#decided.set(approvalId, decided.status);
    this.#journal.put(layout.approval(approvalId), decided);
    const seq = this.#fact('approval.decided', record.agentId, { approvalId, callId: record.callId, decision: decision.decision, reason: decision.reason });
    this.#emit({ type: 'approval.decided', runId: this.runId, actor: record.agentId, approvalId, decision: decision.decision }, seq);
    return this.accept({
      id: this.newId('env'),
      from: 'human',
      to: record.agentId,
      type: APPROVAL_DECISION,
      // The waiting actor knows the request by its own id (a fork's differs from the record's).
      payload: { approvalId: record.requestId ?? approvalId, callId: record.callId, decision },
      seq: 0,
      ts: this.clock.now(),
    });
  }

  #blackboard(agentId: string): BlackboardAccess | undefined {
    const ref = this.#actor.system.get('blackboard') as AnyActorRef | undefined;
    if (!ref) return undefined;
    return {
      read: () => {
        const entries = (ref.getSnapshot() as { context: { entries: Record<string, { value: unknown }> } }).context.entries;
        return Object.fromEntries(Object.entries(entries).map(([key, entry]) => [key, entry.value]));
      },
      write: (key, value) => ref.send({ type: 'write', key, value, by: agentId, at: this.clock.now() } as { type: string }),
    };
  }

  // ---- mailboxes -----------------------------------------------------------------------

  #enqueue(actorId: string, envelope: Envelope): void {
    this.#journal.mail(actorId, this.#mailboxes.enqueue(actorId, envelope));
    this.#scheduleDelivery();
  }

  #scheduleDelivery(): void {
    if (this.#deliveryScheduled) return;
    this.#deliveryScheduled = true;
    // Delivery waits for the sender's macrostep to finish: XState must not be re-entered.
    queueMicrotask(() => {
      this.#deliveryScheduled = false;
      this.#deliver();
    });
  }

  /**
   * Resolves once the conversation of `actorId` is read back, when the restore deferred it;
   * `undefined` when there is nothing to wait for. An agent reads its conversation only while
   * it handles an envelope or makes a model or tool call, and each of those waits for this:
   * so a resume reads no conversation, and a run of a thousand agents reads those that work.
   * A log that cannot be read stops the run (`STORAGE_CORRUPT`), with nothing written.
   */
  #ready(actorId: string): Promise<void> | undefined {
    const entry = this.#deferred.get(actorId);
    if (!entry) return undefined;
    if (!entry.filling) {
      const read = Promise.all(entry.logs.map(async (deferred) => this.#checkpointer.filled(deferred.ref.log, await this.#o.store.fillDeferred(this.runId, entry.seq, deferred))));
      entry.filling = this.#busy(
        read.then(
          () => {
            this.#deferred.delete(actorId);
            // Scheduled before the fill stops counting as work: the held mail goes on.
            this.#scheduleDelivery();
          },
          (error: unknown) => {
            // A read cut off by the run stopping (the node closing its storage) is no damage.
            if (this.status === 'running') this.#halt(error, `reading the conversation of "${actorId}"`);
            throw error;
          },
        ),
      );
      entry.filling.catch(() => {});
    }
    return entry.filling;
  }

  #deliver(): void {
    if (this.status !== 'running') return;
    // Mail for an actor whose conversation is still being read back waits in its mailbox.
    const held = (actorId: string) => this.#ready(actorId) !== undefined;
    this.#mailboxes.drain((actorId, envelope) => {
      const target = actorId === this.rootId ? this.#actor : (this.#actor.system.get(actorId) as AnyActorRef | undefined);
      if (!target || target.getSnapshot().status !== 'active') {
        this.#fact('message', actorId, { deadLetter: true, id: envelope.id, type: envelope.type, reason: 'no such active actor' });
        return;
      }
      target.send({ type: ENVELOPE_EVENT, envelope } as { type: string });
    }, held);
    this.#scheduleCapture();
  }

  // ---- journal, ledger, checkpoints ---------------------------------------------------

  /** Emits a live event (scrubbed of secrets), tagged with the journal entry it mirrors. */
  #emit(event: RunEvent, seq?: number): void {
    const safe = this.#o.security.redact(seq === undefined ? event : { ...event, journalSeq: seq });
    this.liveEvents.emit(safe);
    this.#o.events.emit(safe);
  }

  /** Journals a fact; returns its sequence number. */
  #fact(kind: JournalKind, actor: string, data: Record<string, unknown>): number {
    return this.#journal.fact(kind, actor, data);
  }

  #record(entry: LedgerEntry): void {
    // Stamped with the checkpoint that will carry it, so a fork knows what it may replay.
    entry.checkpoint = this.#checkpointSeq + 1;
    this.#ledger.set(entry);
    this.#journal.ledger(entry);
  }

  readonly #inspect = (event: InspectionEvent): void => {
    if (event.type === '@xstate.snapshot' && this.status === 'running') {
      this.#lastActive = this.clock.now();
      const ref = event.actorRef as AnyActorRef;
      // The direct child of the root this snapshot belongs to: only those are captured.
      let top = ref as AnyActorRef & { _parent?: AnyActorRef };
      while (top._parent && top._parent !== this.#actor) top = top._parent as typeof top;
      if (top !== this.#actor) this.#touched.add(top.id);
      const actorId = ref === this.#actor ? this.rootId : ref.id;
      const value = (event.snapshot as { value?: unknown }).value;
      if ((actorId === this.rootId || this.#o.definition.actorIds.includes(actorId)) && value !== undefined) {
        const state = stateString(value);
        if (this.#lastState.get(actorId) !== state) {
          this.#lastState.set(actorId, state);
          this.#emit({ type: 'state', runId: this.runId, actor: actorId, state }, this.#fact('state', actorId, { state }));
        }
      }
      this.#scheduleCapture();
    }
    const user = this.#o.inspect;
    if (user) {
      try {
        if (typeof user === 'function') user(event);
        else user.next?.(event);
      } catch {
        // An inspector's failure must not break the run.
      }
    }
  };

  #scheduleCapture(): void {
    if (this.#captureScheduled || this.status !== 'running') return;
    this.#captureScheduled = true;
    queueMicrotask(() => {
      this.#captureScheduled = false;
      if (this.status === 'running') void this.#capture().catch(() => {});
    });
  }

  /**
   * Captures what changed since the last checkpoint, synchronously, and writes it with
   * everything the journal collected in one batch. Nothing changed and nothing collected:
   * nothing is written.
   */
  #capture(): Promise<void> {
    const seq = this.#checkpointSeq + 1;
    const ts = this.clock.now();
    const changed = this.#usage.takeChanged();
    const usage = this.#usage.ledger;
    const seen = this.#seenNew;
    this.#seenNew = [];
    const touched = this.#touched;
    this.#touched = new Set();
    const captured = this.#checkpointer.capture(this.#actor, {
      touched,
      seq,
      ts,
      journalSeq: this.#journal.journalSeq,
      positions: this.#mailboxes.positions(),
      usage: { total: usage.total, agents: usage.agents, changed },
      seen,
      secrets: this.#ledger.secretNames,
    });
    // `waiting` promises that only a human can move the run on: a node that finds it so at
    // start leaves it unloaded. While another actor still works (a call in flight, mail to
    // hand over, a backoff timer running) the run is `running`, or a crash would leave that
    // work unloaded, and never woken, for good.
    const onlyWaits = () => {
      if (this.#inFlight > 0 || this.#deliveryScheduled) return false;
      const idle = this.#actorsIdle();
      return idle !== undefined && idle.wakeAt === undefined;
    };
    const status = this.record.status === 'running' || this.record.status === 'waiting' ? (this.#waiting.size > 0 && onlyWaits() ? 'waiting' : 'running') : this.record.status;
    if (captured.empty && !this.#journal.dirty && status === this.record.status) return this.#writeChain;
    this.#checkpointSeq = seq;
    this.record.checkpoint = seq;
    this.record.status = status;
    this.record.updatedAt = ts;
    this.#journal.put(layout.run(this.runId), this.record);
    for (const actorId of captured.manifest.changed) this.#retention.wrote(actorId, seq);
    const batch = this.#journal.seal([...captured.blobOps, ...captured.ops, ...this.#retention.prune(seq)], seq);
    return this.#enqueueWrite(batch.ops).then(
      () => {
        this.#o.blobs.commit(captured.blobOps);
        batch.committed();
        this.#emit({ type: 'checkpoint', runId: this.runId, seq });
        for (const envelope of batch.leaving) this.#routeOut(envelope);
        this.#mailOut(batch.mail);
      },
      async (error: unknown) => {
        await batch.failed(error);
        throw error;
      },
    );
  }

  #enqueueWrite(ops: readonly StorageOp[]): Promise<void> {
    // Queued now, in capture order: the node's queue is FIFO across runs, which keeps this
    // run's batches in order and the audit chain's records in the order they were chained.
    const write = this.#writeError ? Promise.reject(this.#writeError) : this.#o.writes.write(ops, this.#o.claim);
    this.#writesInFlight += 1;
    void write.finally(() => (this.#writesInFlight -= 1)).catch(() => {});
    // A run that cannot persist must stop rather than run ahead of its durable state.
    this.#writeChain = Promise.all([this.#writeChain, write]).then(() => {}).catch((error) => this.#halt(error));
    return write;
  }

  /**
   * Stops the run on a storage error (a failed write, a log that cannot be read back): it
   * settles failed in this process and writes nothing more. The index still says what the
   * last durable batch said, so a damaged database is reported, never overwritten. `what`
   * names what failed in the error (by default the checkpoint write).
   */
  #halt(error: unknown, what = 'checkpoint write'): void {
    if (this.#writeError) return;
    this.#writeError = error;
    if (this.status === 'running') {
      this.status = 'stopped';
      this.#actor.stop();
    }
    // Settled whatever the state: a run whose final checkpoint failed never settles otherwise.
    // LEASE_LOST as it is: the run is not failed, another owner executes it now.
    const reason =
      isTroupeError(error, ErrorCode.LEASE_LOST) || isTroupeError(error, ErrorCode.STORAGE_CORRUPT)
        ? error
        : new TroupeError(ErrorCode.STORAGE_FAILED, `${what} failed, run stopped: ${(error as Error)?.message ?? String(error)}`, { cause: error });
    const settle = () => {
      this.#settle({ runId: this.runId, status: 'failed', output: '', error: serializeError(reason) });
      this.liveEvents.end();
    };
    // Once the batches already queued are written (or failed): a settled run lets go of its
    // claim, and a batch still in flight (a decision, halted by the read after it) would
    // then be refused, and its caller told LEASE_LOST for what is durable after all.
    void this.#writeChain.then(settle, settle);
  }

  #finish(output: RunOutput): void {
    if (this.status !== 'running') return;
    const finalState = stateString((this.#actor.getSnapshot() as { value?: unknown }).value);
    if (this.#lastState.get(this.rootId) !== finalState) {
      this.#lastState.set(this.rootId, finalState);
      this.#emit({ type: 'state', runId: this.runId, actor: this.rootId, state: finalState }, this.#fact('state', this.rootId, { state: finalState }));
    }
    const failed = output?.status === 'failed';
    this.record.status = failed ? 'failed' : 'completed';
    this.record.output = output?.output ?? '';
    if (output?.error) this.record.error = output.error;
    const endSeq = failed ? this.#fact('run.failed', this.rootId, { error: output.error }) : this.#fact('run.completed', this.rootId, { output: this.record.output });
    if (!this.record.part) for (const node of this.#remoteNodes()) this.#journal.leave(this.#systemEnvelope(node, SystemMessage.end, { status: this.record.status }));
    const result: RunResult = this.#o.security.redact({ runId: this.runId, status: this.record.status as RunResult['status'], output: this.record.output, error: output?.error ?? null });
    const written = this.#capture();
    this.status = failed ? 'failed' : 'completed';
    void written.then(
      () => {
        this.#emit(failed ? { type: 'run.failed', runId: this.runId, error: result.error! } : { type: 'run.completed', runId: this.runId, output: result.output }, endSeq);
        this.#settle(result);
        this.liveEvents.end();
      },
      () => {},
    );
  }

  /**
   * Stops the run without finishing it: writes a last checkpoint, then stops the actors
   * (a stopped actor persists with no children, so the save must come first). The run
   * stays `running` in the index and resumes on the next node start.
   */
  async stop(): Promise<void> {
    if (this.status !== 'running') {
      await this.#writeChain;
      this.#journal.abandon();
      return;
    }
    const last = this.#capture();
    this.status = 'stopped';
    await last.catch(() => {});
    await this.#writeChain;
    this.#actor.stop();
    // Nothing is sealed after the last capture.
    this.#journal.abandon();
    this.liveEvents.end();
  }
}
