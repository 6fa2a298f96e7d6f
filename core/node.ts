import { envSecrets } from './secrets.js';
import { createSecurityContext } from './security.js';
import { createPendingAsks } from './pending-asks.js';
import { createWriteQueue } from './write-queue.js';
import { createBlobWriter } from './blobs.js';
import { ApprovalDecisionSchema, type ApprovalDecision, type ApprovalRecord } from './approvals.js';
import { backgroundTimer, randomIds, systemClock, type Clock, type IdGenerator } from './clock.js';
import { DEFAULT_MAX_FRAME_BYTES } from './codec.js';
import { decodeEnvelope, parseAddress, parseEnvelope, type Envelope } from './envelope.js';
import { ErrorCode, isRetryable, isTroupeError, serializeError, TroupeError } from './errors.js';
import { EventHub, type RunEvent } from './events.js';
import { eventOfJournal, joinJournalAndLive, type RunEventsOptions } from './facts.js';
import { checkModelRefs, type ModelProviders } from './model.js';
import { runHistory } from './history.js';
import { forkOps } from './fork.js';
import { planUpgrade, upgradeCheckpoint } from './migrations.js';
import { resolveRetention, type RetentionPolicy } from './retention.js';
import { assertRunId, createRunStore, newestRunFirst, put, type Checkpoint, type RunRecord } from './run-store.js';
import type { CheckpointHint } from './checkpoints.js';
import { layout } from './layout.js';
import { leaseLostError } from './claims.js';
import { askNodeOf, partNodeOf } from './address.js';
import { assertNodeId } from './ids.js';
import { ASK_PREFIX, RunHost, ROOT_ACTOR_ID, type RestoreReads, type RunResult } from './run-host.js';
import { SystemMessage, type Transport, type DeliveryReceipt } from './transport.js';
import type { RunnableDefinition } from './runtime.js';
import type { RunClaim, Storage } from './storage.js';
import type { NodeOptions, NodeStatus, ResumeAllOptions, RunDefinition, RunHandle, RunResult as TypedRunResult, TroupeNode } from './node-types.js';
import { nodeTelemetry } from './telemetry.js';
import { validatePayload } from './protocol.js';
import { admitPeerEnvelope, checkSpawn, runPlacement, type RunPlacement } from './peer-admission.js';
import { createStalledSends } from './stalled-sends.js';
import { createNodeMail } from './inbound-mail.js';
import { CALL_GATE, type GatedNodeOptions } from './replay/gate.js';
import { replayRun } from './replay/replay.js';

export type { NodeOptions, NodeStatus, ResumeAllOptions, RunDefinition, RunHandle, RunOptions, SendOptions, TroupeNode } from './node-types.js';

/** A run this node executes: its loaded host, or what it keeps of it while unloaded. */
interface RunSlot {
  runId: string;
  definition: RunnableDefinition;
  host: RunHost | undefined;
  /**
   * Set while the run is unloaded: the claim it keeps, what it waits for, its wake-up timer.
   * No claim: let go on a shared storage while it waits for a human; it is claimed again to
   * be loaded (and another node or process may take it meanwhile).
   */
  passive?: { claim: RunClaim | undefined; waiting: ApprovalRecord[]; cancelWake?: () => void };
  passivating?: Promise<void> | undefined;
  activating?: Promise<RunHost> | undefined;
  /** Live events of every incarnation of the run. */
  hub: EventHub<RunEvent>;
  result: Promise<RunResult>;
  settle(result: RunResult): void;
}

/** A finished run's result, or `RUN_FAILED` when it failed. */
const orThrow = (result: RunResult): RunResult => {
  if (result.status === 'failed') {
    throw new TroupeError(ErrorCode.RUN_FAILED, `run ${result.runId} failed: ${result.error?.message ?? 'unknown error'}`, { details: { runId: result.runId, error: result.error } });
  }
  return result;
};

/**
 * A handle whose output type the caller states (`run<T>` infers it from the definition's
 * `parseOutput`): `never` is assignable to every `T`.
 */
type AnyHandle = RunHandle<never>;

/** The result as a handle gives it: a completed run's text read by the definition's `parseOutput`, if it has one. */
const typedResult = (definition: RunnableDefinition | undefined, result: RunResult): TypedRunResult<never> => {
  const parse = (definition as RunDefinition<unknown> | undefined)?.parseOutput;
  return (result.status === 'completed' && parse ? { ...result, output: parse(result.output) } : result) as TypedRunResult<never>;
};

/** Like {@link typedResult}, for `settled()`: a recorded answer that no longer fits is a failed outcome, not a throw. */
const settledResult = (definition: RunnableDefinition | undefined, result: RunResult): TypedRunResult<never> => {
  try {
    return typedResult(definition, result);
  } catch (error) {
    return { ...result, status: 'failed', output: '', error: serializeError(error) } as TypedRunResult<never>;
  }
};

/** `events(signal)` is the older form of `events({ signal })`. */
const eventsOptions = (options: AbortSignal | RunEventsOptions | undefined): RunEventsOptions =>
  options instanceof AbortSignal ? { signal: options } : (options ?? {});

interface ResolvedNodeOptions {
  storage: Storage;
  models: ModelProviders;
  crews: Map<string, RunnableDefinition>;
  resume: boolean;
  sync: boolean;
  clock: Clock;
  ids: IdGenerator;
  inspect: NodeOptions['inspect'];
  maxEnvelopeBytes: number;
  askTimeoutMs: number;
  nodeId: string;
  retention: RetentionPolicy;
  passivateAfterMs: number;
  concurrency: number;
  pollMs: number;
}

/** Runs a node resumes at once when it starts on an embedded storage (see `resumeAll`). */
const RESUME_PARALLEL = 8;

/**
 * Creates a node on `storage`. With `crews` registered it resumes their unfinished runs
 * before resolving. Close it (or `await using`) to checkpoint and stop every run.
 */
export async function createNode(options: NodeOptions): Promise<TroupeNode> {
  if (!options?.storage) throw new TypeError('createNode({ storage }) needs a storage (levelStorage or memoryStorage)');
  const crews = new Map<string, RunnableDefinition>();
  for (const def of options.crews ?? []) {
    if (crews.has(def.id)) throw new TypeError(`two crews registered with id "${def.id}"`);
    crews.set(def.id, def);
  }
  const o: ResolvedNodeOptions = {
    storage: options.storage,
    models: options.models ?? {},
    crews,
    resume: options.resume ?? true,
    sync: options.sync ?? false,
    clock: options.clock ?? systemClock,
    ids: options.ids ?? randomIds,
    inspect: options.inspect,
    maxEnvelopeBytes: options.maxEnvelopeBytes ?? DEFAULT_MAX_FRAME_BYTES,
    askTimeoutMs: options.askTimeoutMs ?? 30_000,
    nodeId: options.nodeId ?? 'local',
    retention: resolveRetention(options.retention),
    // With an injected clock a test decides: the idle timers would be timers of its clock.
    passivateAfterMs: options.passivateAfterMs ?? (options.clock === undefined || options.clock === systemClock ? 60_000 : 0),
    concurrency: options.concurrency ?? 8,
    pollMs: options.pollMs ?? 1_000,
  };
  if (!Number.isInteger(o.concurrency) || o.concurrency < 1) throw new TypeError(`concurrency must be a positive integer (runs executed at once), got ${String(options.concurrency)}`);
  if (!Number.isFinite(o.pollMs) || o.pollMs < 10) throw new TypeError(`pollMs must be at least 10 ms, got ${String(options.pollMs)}`);
  if (!Number.isFinite(o.passivateAfterMs) || o.passivateAfterMs < 0) throw new TypeError('passivateAfterMs must be a non-negative number of milliseconds (0 keeps every run loaded)');
  assertNodeId(o.nodeId, 'nodeId');
  // Replies to this node's asks come back to `_ask.<node>/<corr>`, wherever the asked actor lives.
  const askInbox = `${ASK_PREFIX}.${o.nodeId}`;
  let transport: Transport | undefined;
  // Settled once the unfinished runs are resumed at start (see the transport's `deliver`).
  let resumeDone!: () => void;
  const runsResumed = new Promise<void>((resolve) => (resumeDone = resolve));
  const stalls = createStalledSends({ send: (toNode, envelope) => transport!.send(toNode, envelope), clock: o.clock, running: () => status === 'running' });
  const store = createRunStore(o.storage);
  const writes = createWriteQueue(o.storage, { sync: o.sync, ...(options.maxQueuedBytes !== undefined ? { maxQueuedBytes: options.maxQueuedBytes } : {}) });
  const blobs = createBlobWriter();
  // A storage many nodes share (Postgres): runs go to whichever node takes them, and each
  // node keeps its own audit chain, so node ids must be unique there (held as a claim).
  const shared = o.storage.shared;
  const owner = `${o.nodeId}.${o.ids('owner')}`;
  const identity = shared ? await claimNodeId(o.storage, o.nodeId, owner) : undefined;
  const opening = createSecurityContext(o.storage, {
    secrets: options.secrets ?? envSecrets(),
    clock: o.clock,
    auditDir: options.auditDir,
    ...(shared ? { auditChain: o.nodeId } : {}),
  });
  // The start's resume of an embedded node lists the runs and approvals first: reads that do
  // not need the audit log, so they go out while it opens. A cold resume is mostly waiting for
  // such round trips to the storage's thread pool, one after another.
  let startListing = !shared && o.resume ? Promise.all([store.listRuns(), store.listApprovals()]) : undefined;
  // Read or not, a failure of it is the start's resume's to report, not an unhandled rejection.
  startListing?.catch(() => {});
  const security = await opening.catch(async (error: unknown) => {
    if (identity) await o.storage.release(identity).catch(() => {});
    throw error;
  });
  const hosts = new Map<string, RunHost>();
  // Every run this node executes, loaded or not: a handle outlives the host it started on.
  const slots = new Map<string, RunSlot>();
  // One node executes a run at a time: every host holds the storage's claim on its run
  // (core/storage.ts), and every batch it writes is fenced by that claim.
  const claims = new Map<RunHost, RunClaim>();
  // Resumes in progress, so two concurrent resumes of one run share one host.
  const resuming = new Map<string, Promise<AnyHandle>>();
  const events = new EventHub<RunEvent>();
  // Tracing watches the events and names each run's trace context; the node only carries it.
  const tracing = nodeTelemetry(options.telemetry, { nodeId: o.nodeId, clock: o.clock, subscribe: (listener) => events.subscribe(listener) });
  const asks = createPendingAsks(o.clock);
  let status: NodeStatus = 'running';
  let closing: Promise<void> | undefined;
  const gate = (options as NodeOptions & GatedNodeOptions)[CALL_GATE];

  const ensureRunning = () => {
    if (status !== 'running') throw new TroupeError(ErrorCode.NODE_CLOSED, `node is ${status}`);
  };

  /** The slot of a run this node starts executing: handle promises and events that outlive a host. */
  const openSlot = (runId: string, definition: RunnableDefinition): RunSlot => {
    let settle!: (result: RunResult) => void;
    const result = new Promise<RunResult>((resolve) => (settle = resolve));
    const slot: RunSlot = { runId, definition, host: undefined, hub: new EventHub<RunEvent>(), result, settle };
    slots.set(runId, slot);
    return slot;
  };

  /** Ends a slot: its run finished, or was stopped here (not unloaded). */
  const closeSlot = (slot: RunSlot) => {
    if (slots.get(slot.runId) === slot) slots.delete(slot.runId);
    slot.passive?.cancelWake?.();
    slot.hub.end();
  };

  const handle = (slot: RunSlot): AnyHandle => ({
    id: slot.runId,
    get status() {
      return slot.host?.status ?? (slot.passive ? 'running' : 'stopped');
    },
    result: () => slot.result.then((result) => typedResult(slot.definition, orThrow(result))),
    settled: () => slot.result.then((result) => settledResult(slot.definition, result)),
    events: (options) => {
      const { signal, from } = eventsOptions(options);
      const live = slot.hub.iterate(signal);
      if (from === 'now') return live;
      // Copied now, before the read: an entry leaves a host's recent list only once it is in storage.
      const recent = slot.host?.recentJournal() ?? [];
      const redact = security.redact;
      return joinJournalAndLive((entry) => redact(eventOfJournal(slot.runId, slot.definition.id, entry)), async () => [...(await store.journal(slot.runId)), ...recent], live);
    },
    subscribe: (listener) => slot.hub.subscribe(listener),
    waiting: () => (slot.host ? (slot.host.status === 'running' ? slot.host.pendingApprovals : []) : (slot.passive?.waiting ?? [])),
    // Stopped here, the run is free for another node to resume.
    async stop() {
      await slot.passivating;
      const host = slot.host;
      if (host) {
        await host.stop();
        if (hosts.get(slot.runId) === host) hosts.delete(slot.runId);
        await releaseHost(host);
      } else if (slot.passive?.claim) {
        await o.storage.release(slot.passive.claim);
      }
      closeSlot(slot);
    },
  });

  const finishedHandle = (record: RunRecord, definition: RunnableDefinition | undefined): AnyHandle => {
    const result: RunResult = { runId: record.id, status: record.status === 'failed' ? 'failed' : 'completed', output: record.output ?? '', error: record.error ?? null };
    const ended = new EventHub<RunEvent>();
    ended.end();
    const redact = security.redact;
    return {
      id: record.id,
      status: result.status,
      settled: async () => settledResult(definition, result),
      result: async () => typedResult(definition, orThrow(result)),
      // A finished run's events are its journal.
      events: (options) =>
        eventsOptions(options).from === 'now'
          ? ended.iterate()
          : joinJournalAndLive((entry) => redact(eventOfJournal(record.id, record.crew, entry)), () => store.journal(record.id), ended.iterate()),
      subscribe: () => () => {},
      waiting: () => [],
      stop: async () => {},
    };
  };

  const sendRemote = (toNode: string, envelope: Envelope, fromRun = false): Promise<void> => {
    if (toNode === o.nodeId) throw new TroupeError(ErrorCode.UNKNOWN_ACTOR, `no active actor at ${envelope.to}`, { details: { to: envelope.to } });
    if (!transport) {
      throw new TroupeError(ErrorCode.UNKNOWN_ACTOR, `${envelope.to} lives on node "${toNode}", and this node has no transport`, { details: { to: envelope.to, node: toNode } });
    }
    return fromRun ? stalls.send(toNode, envelope) : transport.send(toNode, envelope);
  };

  /**
   * The peer `route` would send `envelope` to, decided without waiting: run parts on other
   * nodes, and actors a loaded run placed elsewhere. `undefined` for everything else (local
   * mail, asks, runs this node has not loaded), which `route` then handles as it comes.
   */
  const remoteNodeOf = (envelope: Envelope): string | undefined => {
    const { runId, actorId } = parseAddress(envelope.to);
    if (runId === undefined || askNodeOf(runId) !== undefined) return undefined;
    const target = partNodeOf(actorId);
    if (target !== undefined) return target === o.nodeId ? undefined : target;
    const host = hosts.get(runId);
    return host && !host.isLocal(actorId) ? host.nodeOf(actorId) : undefined;
  };

  /** Hands a reply to the pending ask of this node it answers (`_ask.<node>/<corr>`). */
  const answerAsk = (reply: Envelope): void => asks.answer(parseAddress(reply.to).actorId, reply);

  /** Routes an envelope: to a local run's mailbox, a pending ask, a new run part, or a peer. */
  const route = async (envelope: Envelope, receipt?: DeliveryReceipt, fromRun = false): Promise<void> => {
    const { runId, actorId } = parseAddress(envelope.to);
    const askNode = askNodeOf(runId);
    if (askNode !== undefined) {
      // In a cluster on one database the asker reads its replies from there, whatever links the nodes.
      if (askNode !== o.nodeId) return shared ? mail.post(envelope) : sendRemote(askNode, envelope, fromRun);
      return answerAsk(envelope);
    }
    const target = partNodeOf(actorId);
    if (runId !== undefined && target !== undefined) {
      if (target !== o.nodeId) return sendRemote(target, envelope, fromRun);
      if (envelope.type === SystemMessage.spawn) return spawnPart(runId, envelope);
      const part = hosts.get(runId) ?? (await activate(runId));
      if (part && part.status === 'running') return part.accept(envelope, receipt);
      return; // the part already ended here: nothing to do
    }
    const host = runId === undefined ? undefined : (hosts.get(runId) ?? (await activate(runId)));
    if (host && !host.isLocal(actorId)) return sendRemote(host.nodeOf(actorId), envelope, fromRun);
    if (host && host.status === 'running') return host.accept(envelope, receipt);
    // A run this node does not hold (another node does, or nobody yet): a row of its mail.
    if (!host && runId !== undefined && !fromRun && !slots.has(runId)) return mail.post(security.redact(envelope));
    throw new TroupeError(ErrorCode.UNKNOWN_ACTOR, `no active actor at ${envelope.to}`, { details: { to: envelope.to } });
  };

  const mail = createNodeMail({
    store,
    write: (ops) => writes.write(ops),
    owner,
    askInbox,
    parse: (value) => parseEnvelope(value, { maxBytes: o.maxEnvelopeBytes }),
    answer: answerAsk,
    holds: (runId) => slots.has(runId),
    drain: async (runId) => {
      const host = hosts.get(runId) ?? (await activate(runId));
      if (host?.status !== 'running') return false;
      await host.drainMail();
      return true;
    },
    now: () => o.clock.now(),
  });

  const newRecord = (r: Pick<RunRecord, 'id' | 'crew' | 'version' | 'input' | 'part' | 'trace'> & { source: string | undefined }): RunRecord => {
    const now = o.clock.now();
    return {
      id: r.id,
      crew: r.crew,
      version: r.version,
      ...(r.source ? { source: r.source } : {}),
      status: 'running',
      input: r.input,
      startedAt: now,
      updatedAt: now,
      checkpoint: 0,
      resumes: 0,
      ...(r.part ? { part: r.part } : {}),
      ...(r.trace ? { trace: r.trace } : {}),
    };
  };

  /** Starts hosting the actors a peer placed on this node for one of its runs. */
  const spawnPart = async (runId: string, envelope: Envelope): Promise<void> => {
    // Every check before the first write: a spawn this node cannot honour leaves no record,
    // no claim and no host behind, and is refused for good rather than retried into a loop.
    const { spawn, definition } = checkSpawn(envelope, runId, o.nodeId, o.crews);
    assertRunId(runId);
    const existing = await store.getRun(runId);
    if (existing) return; // a redelivered spawn: the part exists (maybe resumed, maybe done)
    await underClaim(runId, async (claim) => {
      // Checked again under the claim: another node on this storage may have taken the spawn first.
      if (await store.getRun(runId)) return o.storage.release(claim);
      const part = { origin: spawn.origin, actors: spawn.actors };
      const trace = tracing.runContext({ runId, crew: spawn.crew, part, parent: spawn.trace });
      // The peer's `source` is not kept: a node loads crew code from its own registry only,
      // and a path a peer named must never reach `troupe resume`'s import.
      const record = newRecord({ id: runId, crew: spawn.crew, version: spawn.version, source: undefined, input: spawn.input, part, trace });
      const host = newHost(definition, record, claim);
      track(host, openSlot(runId, definition));
      try {
        host.start(spawn.input);
      } catch (cause) {
        // The crew could not build the part's machine: no retry can change that.
        throw new TroupeError(ErrorCode.ENVELOPE_REFUSED, `node "${o.nodeId}" cannot host ${spawn.actors.join(', ')} of run "${runId}": ${(cause as Error)?.message ?? String(cause)}`, {
          cause,
          retryable: false,
          details: { runId, crew: spawn.crew, reason: 'start' },
        });
      }
      // Acknowledged only once the part is on disk: a crash now resumes it, never loses it.
      await host.checkpointNow();
    });
  };

  /** Where the actors of `runId` live, for a run this node takes part in (loaded or not). */
  const placementOf = (runId: string): RunPlacement | undefined | Promise<RunPlacement | undefined> => {
    const host = hosts.get(runId);
    if (host) return runPlacement(o.nodeId, host.record, slots.get(runId)?.definition ?? o.crews.get(host.record.crew));
    return (async () => {
      assertRunId(runId);
      const record = await store.getRun(runId);
      return record && runPlacement(o.nodeId, record, slots.get(runId)?.definition ?? o.crews.get(record.crew));
    })().catch(() => undefined);
  };

  /** Gives up the claim of a host that no longer executes its run (ended, stopped, or taken over). */
  const releaseHost = async (host: RunHost): Promise<void> => {
    const claim = claims.get(host);
    if (!claim) return;
    claims.delete(host);
    await o.storage.release(claim);
  };

  /** Makes `host` the loaded incarnation of `slot`'s run. */
  const track = (host: RunHost, slot: RunSlot) => {
    hosts.set(host.runId, host);
    slot.host = host;
    host.liveEvents.subscribe((event) => {
      slot.hub.emit(event);
      if (event.type === 'checkpoint' && o.passivateAfterMs > 0) armIdle(host, slot, waitsForHuman(host) ? HUMAN_WAIT_CHECK_MS : o.passivateAfterMs);
    });
    // Settled means the final checkpoint is durable (or the run could not write any more).
    void host.settled().then(async (result) => {
      disarmIdle(host);
      if (hosts.get(host.runId) === host) hosts.delete(host.runId);
      await releaseHost(host).catch(() => {});
      if (result.status === 'failed' && result.error?.code === ErrorCode.LEASE_LOST) {
        // Not this run's end: another owner executes it now, and this node wrote nothing more.
        const lost: RunEvent = { type: 'run.lost', runId: host.runId };
        slot.hub.emit(lost);
        events.emit(lost);
      }
      if (slot.host === host) {
        slot.settle(result);
        closeSlot(slot);
      }
      // Room for another run.
      if (working) void takeRuns();
    });
    return slot;
  };

  /**
   * Unloads a run that only waits: a final checkpoint, then the host is dropped and the run
   * kept as a slot with its claim, what it waits for and a timer for its earliest deadline.
   * Its next envelope, decision or deadline loads it again (core/run-host.ts `quiescence`).
   */
  const passivate = (slot: RunSlot, host: RunHost, wakeAt: number | undefined) => {
    const claim = claims.get(host);
    if (!claim || slot.host !== host || slot.passivating) return;
    slot.passivating = (async () => {
      const waiting = host.pendingApprovals;
      slot.host = undefined;
      hosts.delete(slot.runId);
      claims.delete(host);
      await host.stop();
      disarmIdle(host);
      if (shared && wakeAt === undefined && waiting.length > 0) {
        // In a cluster a run waiting for a human is nobody's: whoever decides (`troupe
        // approve` anywhere) takes and continues it, and it holds no lease meanwhile.
        await o.storage.release(claim).catch(() => {});
        slot.passive = { claim: undefined, waiting };
        const released: RunEvent = { type: 'run.unloaded', runId: slot.runId };
        slot.hub.emit(released);
        events.emit(released);
        return;
      }
      const cancelWake = wakeAt === undefined ? undefined : o.clock.setTimer(() => void activate(slot.runId).catch(() => {}), Math.max(0, wakeAt - o.clock.now()));
      slot.passive = { claim, waiting, ...(cancelWake ? { cancelWake } : {}) };
      const unloaded: RunEvent = { type: 'run.unloaded', runId: slot.runId, ...(wakeAt !== undefined ? { wakeAt } : {}) };
      slot.hub.emit(unloaded);
      events.emit(unloaded);
    })().finally(() => (slot.passivating = undefined));
  };

  /** Loads an unloaded run again (undefined when `runId` is not one of them). */
  const activate = async (runId: string): Promise<RunHost | undefined> => {
    const slot = slots.get(runId);
    if (!slot || slot.host) return slot?.host;
    await slot.passivating;
    if (slot.host) return slot.host;
    if (!slot.passive) return undefined;
    slot.activating ??= (async () => {
      const passive = slot.passive!;
      passive.cancelWake?.();
      slot.passive = undefined;
      try {
        // Let go meanwhile: RUN_CLAIMED when another node or process took it.
        if (passive.claim) await restoreClaimed(runId, slot.definition, passive.claim, slot);
        else await underClaim(runId, (claim) => restoreClaimed(runId, slot.definition, claim, slot));
        const loaded: RunEvent = { type: 'run.loaded', runId };
        slot.hub.emit(loaded);
        events.emit(loaded);
      } catch (error) {
        if (passive.claim) await o.storage.release(passive.claim).catch(() => {});
        closeSlot(slot);
        throw error;
      }
      return slot.host!;
    })().finally(() => (slot.activating = undefined));
    return slot.activating;
  };

  /**
   * Looks at `host` once it has been quiet for `passivateAfterMs` and unloads it if it only
   * waits. Armed again at every checkpoint, so a run that keeps working is never looked at
   * and nothing polls: a clock's timers see one timer per run at most.
   */
  const idleTimers = new Map<RunHost, () => void>();
  // In a cluster a run that waits for a human is let go at once (see `passivate`), so that
  // whoever decides can take it; looked at again this soon while its last writes land.
  const waitsForHuman = (host: RunHost) => shared !== undefined && host.pendingApprovals.length > 0;
  const HUMAN_WAIT_CHECK_MS = 20;
  const armIdle = (host: RunHost, slot: RunSlot, delay = o.passivateAfterMs) => {
    idleTimers.get(host)?.();
    idleTimers.set(
      host,
      backgroundTimer(o.clock, () => {
        idleTimers.delete(host);
        if (status !== 'running' || slot.host !== host) return;
        const quiet = host.quiescence();
        if (!quiet) {
          if (waitsForHuman(host)) armIdle(host, slot, HUMAN_WAIT_CHECK_MS);
          return; // working: its next checkpoint arms the timer again
        }
        if (waitsForHuman(host) && quiet.wakeAt === undefined) return passivate(slot, host, undefined);
        const now = o.clock.now();
        const idleFor = now - quiet.since;
        if (idleFor < o.passivateAfterMs) return armIdle(host, slot, o.passivateAfterMs - idleFor);
        // A deadline sooner than the idle period is simply waited for, loaded.
        if (quiet.wakeAt !== undefined && quiet.wakeAt - now < o.passivateAfterMs) return;
        passivate(slot, host, quiet.wakeAt);
      }, delay),
    );
  };
  const disarmIdle = (host: RunHost) => {
    idleTimers.get(host)?.();
    idleTimers.delete(host);
  };


  const newHost = (definition: RunnableDefinition, record: RunRecord, claim: RunClaim) => {
    // The holder is part of every checkpoint's run record: who wrote it, under which epoch.
    record.owner = claim.owner;
    record.epoch = claim.epoch;
    const host = new RunHost({
      definition,
      record,
      claim,
      store,
      models: o.models,
      clock: o.clock,
      ids: o.ids,
      sync: o.sync,
      inspect: o.inspect,
      events,
      nodeId: o.nodeId,
      retention: o.retention,
      // A run's mail waits out a full outbox (see createStalledSends) instead of being dead-lettered.
      route: (envelope: Envelope) => route(envelope, undefined, true),
      mailFor: mail.mailFor,
      parseMail: (value) => validatePayload(parseEnvelope(value, { maxBytes: o.maxEnvelopeBytes })),
      remote: {
        nodeOf: remoteNodeOf,
        // Not while sends to that node wait for room: they were first.
        reserve: (toNode, envelope) => (transport?.reserve && status === 'running' && stalls.waiting(toNode) === 0 ? transport.reserve(toNode, envelope) : undefined),
      },
      writes,
      security,
      blobs,
      ...(gate ? { gate } : {}),
    });
    claims.set(host, claim);
    return host;
  };

  /** Claims `runId` for this node, runs `work` under the claim, and gives it back if `work` fails. */
  const underClaim = async <T>(runId: string, work: (claim: RunClaim) => Promise<T>): Promise<T> => withClaim(await o.storage.claim(runId, owner), work);

  /** Runs `work` under `claim`, held by this node, and gives it back if `work` fails. */
  const withClaim = async <T>(claim: RunClaim, work: (claim: RunClaim) => Promise<T>): Promise<T> => {
    const { runId } = claim;
    try {
      // A node that began closing meanwhile would never stop, nor release, a host started now.
      ensureRunning();
      return await work(claim);
    } catch (error) {
      for (const [host, held] of claims) {
        if (held !== claim) continue;
        claims.delete(host);
        if (hosts.get(runId) === host) hosts.delete(runId);
        const slot = slots.get(runId);
        if (slot?.host === host) closeSlot(slot);
      }
      await o.storage.release(claim);
      throw error;
    }
  };

  /**
   * How a resume reads a run's newest checkpoint: the crew's records beside the manifest, and
   * the conversations left for the run host to read when their agents get work.
   */
  const resumeHint = (def: RunnableDefinition): CheckpointHint => ({ rootId: ROOT_ACTOR_ID, actorIds: def.actorIds, deferConversations: true });

  /** Restores `runId` from its latest checkpoint under `claim` (read after claiming: the previous holder may have written more). */
  const restoreClaimed = async (
    runId: string,
    def: RunnableDefinition,
    claim: RunClaim,
    slot?: RunSlot,
    source?: string,
    approvals?: Promise<ApprovalRecord[]>,
    prefetched?: Promise<Checkpoint | undefined>,
  ): Promise<AnyHandle> => {
    // Every read of a resume that needs nothing but the run id goes out at once: a resume
    // waits for the slowest of them (the conversation logs), not for their sum. The
    // approvals may come from a node's start, which reads them once for all its runs;
    // otherwise the run's own, through its index (every approval of the database would be
    // read again for each run a decision or a takeover loads).
    const reads: RestoreReads = {
      approvals: approvals ?? store.runApprovals(runId),
      approvalsFrom: approvals ? 'all' : 'index',
      outbox: store.outbox(runId),
      inbound: store.inboundMail(runId),
    };
    // With the crew's actor ids its records are read beside the manifest, not after it.
    const latest = prefetched ?? store.latestCheckpoint(runId, resumeHint(def));
    for (const read of [reads.approvals, reads.outbox, reads.inbound, latest]) read.catch(() => {});
    const record = await store.requireRun(runId);
    if (record.status === 'completed' || record.status === 'failed') {
      await o.storage.release(claim);
      return finishedHandle(record, def);
    }
    let checkpoint = await latest;
    // Read before the claim: a checkpoint written since (which only the claim excludes) is read again.
    if (prefetched && (checkpoint?.seq ?? 0) < record.checkpoint) checkpoint = await store.latestCheckpoint(runId, resumeHint(def));
    if (!checkpoint && record.checkpoint === 0 && !record.part) {
      // Submitted (node.submit) and never started: this node starts it.
      const trace = tracing.runContext({ runId, crew: record.crew, parent: record.trace });
      if (trace) record.trace = trace;
      const host = newHost(def, record, claim);
      const tracked = track(host, slot ?? openSlot(runId, def));
      host.start(record.input);
      // Mail can be written for a submitted run before any node starts it.
      if ((await reads.inbound).length > 0) void host.drainMail().catch(() => {});
      return handle(tracked);
    }
    if (!checkpoint) throw new TroupeError(ErrorCode.RUN_NOT_FOUND, `run "${runId}" has no checkpoint to resume from`, { details: { runId } });
    // A migration rewrites the snapshot, conversations included: those are read back first.
    if (checkpoint.deferred && planUpgrade(checkpoint, def, def.migrations ?? []).length > 0) checkpoint = await store.fillCheckpoint(runId, checkpoint);
    // Throws SNAPSHOT_VERSION (and writes nothing) when no migration reaches this version.
    const upgraded = upgradeCheckpoint(checkpoint, def, def.migrations ?? []);
    record.version = def.version;
    // An upgrade moves the run to another module: `troupe resume` and `approve` load that one from now on.
    if (source !== undefined) record.source = source;
    const trace = tracing.runContext({ runId, crew: record.crew, part: record.part, parent: record.trace, resumed: checkpoint.seq });
    if (trace) record.trace = trace;
    const host = newHost(def, record, claim);
    const tracked = track(host, slot ?? openSlot(runId, def));
    await host.restore(upgraded, reads);
    return handle(tracked);
  };

  /**
   * Throws CONFIG_INVALID, listing every problem, when a model reference of an actor this
   * node would host cannot be served. Called before anything of the run is written: such a
   * run could only fail, after retries and restarts that cannot help. Actors placed on other
   * nodes are checked there, against that node's providers.
   */
  const checkConfig = (definition: RunnableDefinition, runId: string, part?: { actors: readonly string[] }) => {
    checkPlacement(definition, runId);
    const hosted = (actor: string) => (part ? part.actors.includes(actor) : (definition.placement?.[actor] ?? o.nodeId) === o.nodeId);
    const refs = Object.fromEntries(Object.entries(definition.modelRefs ?? {}).filter(([actor]) => hosted(actor)));
    const problems = checkModelRefs(o.models, refs);
    if (problems.length === 0) return;
    const list = problems.map((p) => `agent "${p.agent}" model "${p.model}": ${p.problem}`).join('; ');
    throw new TroupeError(ErrorCode.CONFIG_INVALID, `run "${runId}" of crew "${definition.id}" cannot start: ${list}`, {
      details: { runId, crew: definition.id, problems },
    });
  };

  /** Throws CONFIG_INVALID for a crew that places actors on other nodes when the storage is shared. */
  const checkPlacement = (definition: RunnableDefinition, runId: string) => {
    const placed = Object.entries(definition.placement ?? {});
    if (shared && placed.length > 0) {
      // A part's records would share the run's keys in the one database: the part would never start.
      throw new TroupeError(
        ErrorCode.CONFIG_INVALID,
        `run "${runId}" of crew "${definition.id}" places ${placed.map(([actor, node]) => `${actor} on node "${node}"`).join(', ')}: on a database nodes share, every actor of a run runs on the node that holds it. Split the crew into runs that send each other mail (it crosses nodes as rows), or use placement on a ws mesh of nodes with their own LevelDB`,
        { details: { runId, crew: definition.id, placement: Object.fromEntries(placed) } },
      );
    }
  };

  /** A waiting run found at start, taken as an unloaded slot: claimed, not read beyond its approvals. */
  const registerWaiting = async (record: RunRecord, approvals: Promise<ApprovalRecord[]>): Promise<AnyHandle> => {
    const def = o.crews.get(record.crew)!;
    const head = await store.latestCheckpointHead(record.id);
    if (head) planUpgrade(head, def, def.migrations ?? []);
    checkConfig(def, record.id, record.part);
    return underClaim(record.id, async (claim) => {
      const waiting = (await approvals).filter((a) => a.runId === record.id && a.status === 'pending');
      const slot = openSlot(record.id, def);
      slot.passive = { claim, waiting };
      return handle(slot);
    });
  };

  /** `node.resume`; `approvals` as in {@link restoreClaimed}. */
  const resumeRun = async (runId: string, definition?: RunnableDefinition, resumeOptions?: { source?: string }, approvals?: Promise<ApprovalRecord[]>, listed?: RunRecord): Promise<AnyHandle> => {
    ensureRunning();
    const known = slots.get(runId);
    if (known) {
      await activate(runId);
      return handle(known);
    }
    const inProgress = resuming.get(runId);
    if (inProgress) return inProgress;
    const resumed = (async () => {
      const record = listed ?? (await store.requireRun(runId));
      // A finished run resolves at once with its recorded outcome.
      if (record.status === 'completed' || record.status === 'failed') return finishedHandle(record, definition ?? o.crews.get(record.crew));
      const def = definition ?? o.crews.get(record.crew);
      if (!def) {
        throw new TroupeError(ErrorCode.CREW_NOT_REGISTERED, `run "${runId}" needs crew "${record.crew}", which this node does not know`, {
          details: { runId, crew: record.crew },
        });
      }
      if (def.id !== record.crew) throw new TypeError(`run "${runId}" belongs to crew "${record.crew}", not "${def.id}"`);
      // Before the claim, which is a write: a run this node cannot serve is left as it was.
      // On an embedded storage (one process) the whole checkpoint is read meanwhile, beside
      // the claim's own reads and write, instead of after them.
      const prefetch = shared ? undefined : store.readLatest(runId, resumeHint(def));
      const prefetched = prefetch?.checkpoint;
      prefetched?.catch(() => {});
      const head = await (prefetch?.head ?? store.latestCheckpointHead(runId));
      if (head) planUpgrade(head, def, def.migrations ?? []);
      checkConfig(def, runId, record.part);
      // RUN_CLAIMED while another live node executes it.
      return underClaim(runId, (claim) => restoreClaimed(runId, def, claim, undefined, resumeOptions?.source, approvals, prefetched));
    })().finally(() => resuming.delete(runId));
    resuming.set(runId, resumed);
    return resumed;
  };

  const decide = async (approvalId: string, raw: ApprovalDecision): Promise<void> => {
    ensureRunning();
    const decision = ApprovalDecisionSchema.parse(raw);
    const record = await store.getApproval(approvalId);
    if (!record) throw new TroupeError(ErrorCode.APPROVAL_NOT_FOUND, `no approval "${approvalId}" in ${o.storage.location}`, { details: { approvalId } });
    if (record.status !== 'pending') {
      throw new TroupeError(ErrorCode.APPROVAL_DECIDED, `approval ${approvalId} was already ${record.status}`, { details: { approvalId, status: record.status } });
    }
    let host = hosts.get(record.runId) ?? (await activate(record.runId));
    if (!host && o.crews.has((await store.requireRun(record.runId)).crew)) {
      await node.resume(record.runId);
      host = hosts.get(record.runId);
    }
    if (!host || host.status !== 'running') {
      throw new TroupeError(ErrorCode.RUN_NOT_ACTIVE, `run ${record.runId} is not active on this node; resume it first`, { details: { runId: record.runId } });
    }
    await host.decide(approvalId, decision);
  };

  // ── Shared storage: taking free runs, and letting go of the ones whose lease was lost ──

  /** Runs this node took but could not serve (a model it lacks, a snapshot it cannot read): left to other nodes. */
  const refused = new Set<string>();
  let working = false;
  let stopPolling: (() => void) | undefined;
  let taking: Promise<RunHandle<unknown>[]> | undefined;
  let takeAgain = false;

  /** Starts executing a run this node just took from the shared storage. */
  const adopt = async (claim: RunClaim): Promise<AnyHandle | undefined> => {
    const { runId } = claim;
    try {
      // A run this node let go while it waited for a human comes back into its slot.
      const mine = slots.get(runId);
      if (mine && !(mine.passive && mine.passive.claim === undefined)) throw new TroupeError(ErrorCode.RUN_ALREADY_ACTIVE, `run "${runId}" is still held here under an older claim`);
      const record = await store.requireRun(runId);
      const def = o.crews.get(record.crew);
      if (!def) throw new TroupeError(ErrorCode.CREW_NOT_REGISTERED, `run "${runId}" needs crew "${record.crew}"`, { details: { runId, crew: record.crew } });
      const head = await store.latestCheckpointHead(runId);
      if (head) planUpgrade(head, def, def.migrations ?? []);
      checkConfig(def, runId, record.part);
      if (mine) mine.passive = undefined;
      return await withClaim(claim, () => restoreClaimed(runId, def, claim, mine));
    } catch (error) {
      await o.storage.release(claim).catch(() => {});
      // Left to other nodes for good only when no retry here can help; a passing failure (the
      // database, a race) is tried again at the next poll.
      if (!isRetryable(error) || isTroupeError(error, ErrorCode.CREW_NOT_REGISTERED)) {
        refused.add(runId);
        events.emit({ type: 'run.refused', runId, error: serializeError(error) });
      }
      return undefined;
    }
  };

  /** Takes free runs up to `concurrency` (one round at a time; a call meanwhile asks for another round). */
  const takeRuns = (): Promise<RunHandle<unknown>[]> => {
    if (!shared) return Promise.resolve([]);
    if (taking) {
      takeAgain = true;
      return taking;
    }
    taking = (async () => {
      const taken: RunHandle<unknown>[] = [];
      do {
        takeAgain = false;
        if (status !== 'running') break;
        const room = o.concurrency - hosts.size;
        if (room <= 0) break;
        const claimed = await shared.claimable(owner, [...o.crews.keys()], room, [...refused]);
        for (const claim of claimed) {
          const handle = await adopt(claim);
          if (handle) taken.push(handle);
        }
        if (claimed.length === room) takeAgain = true;
      } while (takeAgain);
      return taken;
    })().finally(() => (taking = undefined));
    return taking;
  };

  const poll = () => {
    stopPolling = backgroundTimer(o.clock, () => {
      if (status !== 'running') return;
      void Promise.all([takeRuns().catch(() => {}), mail.drainHeld().catch(() => {})]).finally(poll);
    }, o.pollMs);
  };

  // A lease this node could not renew: another node may execute the run now. The run is
  // stopped here; its last checkpoint write is fenced and refused, so it writes nothing more.
  const offLeaseLost = shared?.onLeaseLost((lost) => {
    for (const claim of lost) {
      const slot = slots.get(claim.runId);
      if (!slot) continue;
      if (slot.passive?.claim === claim) {
        const lostEvent: RunEvent = { type: 'run.lost', runId: claim.runId };
        slot.hub.emit(lostEvent);
        events.emit(lostEvent);
        slot.settle({ runId: claim.runId, status: 'failed', output: '', error: serializeError(leaseLostError([claim], () => 'another node took it, or its lease expired unrenewed')) });
        closeSlot(slot);
        continue;
      }
      // Its final checkpoint is refused (LEASE_LOST): the host settles so, and `track` reports it.
      const host = slot.host;
      if (host && claims.get(host) === claim) void host.stop();
    }
  });
  const offAvailable = shared?.onRunsAvailable(() => {
    if (working) void takeRuns().catch(() => {});
  });
  // Mail for a run held here is drained; for one nobody holds (waiting for a human), taken.
  const offMail = shared?.onMail?.((runId) => {
    if (mail.isMine(runId)) void mail.mailFor(runId).catch(() => {});
    else if (working && askNodeOf(runId) === undefined) void takeRuns().catch(() => {});
  });

  const node: TroupeNode = {
    get status() {
      return status;
    },
    nodeId: o.nodeId,
    owner,
    audit: security.audit,
    subscribe: (listener) => events.subscribe(listener),

    async run(definition, runOptions) {
      ensureRunning();
      if (typeof runOptions?.input !== 'string') throw new TypeError('run(definition, { input }) needs a string input');
      const runId = runOptions.runId ?? o.ids('run');
      assertRunId(runId);
      checkConfig(definition, runId);
      if (hosts.has(runId)) throw new TroupeError(ErrorCode.RUN_ALREADY_ACTIVE, `run "${runId}" already exists`, { details: { runId } });
      // Claimed before the existence check, so two nodes starting the same id cannot both pass it.
      const claim = await o.storage.claim(runId, owner);
      const existing = await (async () => {
        ensureRunning();
        return store.getRun(runId);
      })().catch(async (error: unknown) => {
        await o.storage.release(claim);
        throw error;
      });
      if (existing) {
        await o.storage.release(claim);
        throw new TroupeError(ErrorCode.RUN_ALREADY_ACTIVE, `run "${runId}" already exists`, { details: { runId } });
      }
      // Started right before returning (not inside a helper's promise chain): callers that
      // subscribe after `await run()` see the run from its first steps, as before claims.
      const trace = tracing.runContext({ runId, crew: definition.id, parent: runOptions.traceContext });
      const record = newRecord({ id: runId, crew: definition.id, version: definition.version, source: runOptions.source, input: runOptions.input, trace });
      const host = newHost(definition, record, claim);
      const slot = track(host, openSlot(runId, definition));
      host.start(runOptions.input);
      return handle(slot);
    },

    resume: (runId, definition, resumeOptions) => resumeRun(runId, definition, resumeOptions),

    history: (runId) => runHistory(store, runId, ROOT_ACTOR_ID),

    replay(runId, replayOptions) {
      ensureRunning();
      return replayRun({ store, models: o.models, clock: o.clock, ids: o.ids, createNode }, runId, replayOptions);
    },

    async fork(runId, forkOptions) {
      ensureRunning();
      if (!Number.isInteger(forkOptions?.at) || forkOptions.at < 1) throw new TypeError('fork(runId, { at }) needs a checkpoint number (see history())');
      const source = await store.requireRun(runId);
      const checkpoint = await store.checkpoint(runId, forkOptions.at);
      if (!checkpoint) {
        throw new TroupeError(ErrorCode.RUN_NOT_FOUND, `run "${runId}" has no checkpoint ${forkOptions.at} (it has ${source.checkpoint})`, { details: { runId, at: forkOptions.at } });
      }
      const forkId = forkOptions.runId ?? o.ids('run');
      assertRunId(forkId);
      if (hosts.has(forkId)) throw new TroupeError(ErrorCode.RUN_ALREADY_ACTIVE, `run "${forkId}" already exists`, { details: { runId: forkId } });
      const def = forkOptions.definition ?? o.crews.get(source.crew);
      if (!def) {
        throw new TroupeError(ErrorCode.CREW_NOT_REGISTERED, `run "${forkId}" needs crew "${source.crew}", which this node does not know`, { details: { runId: forkId, crew: source.crew } });
      }
      if (def.id !== source.crew) throw new TypeError(`run "${forkId}" belongs to crew "${source.crew}", not "${def.id}"`);
      // Checked before anything is written, so a fork that cannot run leaves nothing behind.
      checkConfig(def, forkId, source.part);
      // SNAPSHOT_VERSION (a newer schema, or no migration to this version) before the claim
      // and the fork's ops: restoring the fork would refuse it after they were written.
      planUpgrade(checkpoint, def, def.migrations ?? []);
      // The new run is claimed before it is written, and stays claimed while it starts here.
      return underClaim(forkId, async (claim) => {
        if (await store.getRun(forkId)) throw new TroupeError(ErrorCode.RUN_ALREADY_ACTIVE, `run "${forkId}" already exists`, { details: { runId: forkId } });
        // Through the node's one write path, like every other write.
        await writes.write((await forkOps(store, source, checkpoint, { runId: forkId, now: o.clock.now() })).ops);
        return restoreClaimed(forkId, def, claim);
      });
    },

    async resumeAll(resumeOptions: ResumeAllOptions = {}) {
      ensureRunning();
      if (shared) {
        // Shared storage: take what is free now, and keep taking until close.
        const taken = await takeRuns();
        // Not awaited: a resume is not held up by a look for mail (the runs taken read theirs).
        void mail.drainHeld((runId) => hosts.has(runId)).catch(() => {});
        // A node without crews takes nothing: no polling either.
        if (!working && o.crews.size > 0) {
          working = true;
          poll();
        }
        return taken;
      }
      const listed = startListing;
      startListing = undefined;
      const [runs, listedApprovals] = listed ? await listed : [await store.listRuns(), undefined];
      const records = runs.filter((r) => (r.status === 'running' || r.status === 'waiting') && o.crews.has(r.crew));
      const resumed: Array<RunHandle<unknown> | undefined> = new Array(records.length);
      // A few at a time: a resume mostly waits for its reads, so a node with many unfinished
      // runs starts in a fraction of the time one after another takes. The first failure
      // (other than a run another node holds) stops new resumes and is thrown once the
      // started ones are done.
      let next = 0;
      let failure: { error: unknown } | undefined;
      // Read once for every run, not once a run: a node with thousands of unfinished runs would
      // read every approval thousands of times at start. Nothing decides them meanwhile: a
      // decision for a run being resumed waits for that resume.
      let allApprovals: Promise<ApprovalRecord[]> | undefined;
      const approvals = () => (allApprovals ??= listedApprovals ? Promise.resolve(listedApprovals) : store.listApprovals());
      const worker = async () => {
        while (next < records.length && !failure) {
          const i = next++;
          const record = records[i]!;
          try {
            // Waiting for a human: registered, not loaded, until the decision comes.
            resumed[i] = record.status === 'waiting' && o.passivateAfterMs > 0 && !slots.has(record.id) ? await registerWaiting(record, approvals()) : await resumeRun(record.id, undefined, undefined, approvals(), record);
          } catch (error) {
            // Another live node executes it: not ours to resume, and not a failure of this node.
            if (isTroupeError(error, ErrorCode.RUN_CLAIMED)) resumeOptions.onSkipped?.({ runId: record.id, holder: String(error.details.holder), error });
            else failure ??= { error };
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(RESUME_PARALLEL, records.length) }, worker));
      if (failure) throw failure.error;
      // Mail written for runs registered unloaded; not awaited, as the runs resumed read theirs.
      void mail.drainHeld((runId) => hosts.has(runId)).catch(() => {});
      return resumed.filter((h): h is RunHandle<unknown> => h !== undefined);
    },

    async submit(definition, submitOptions) {
      ensureRunning();
      if (typeof submitOptions?.input !== 'string') throw new TypeError('submit(definition, { input }) needs a string input');
      const runId = submitOptions.runId ?? o.ids('run');
      assertRunId(runId);
      checkPlacement(definition, runId);
      // Claimed while it is written, so two submissions of one id cannot both pass the check.
      await underClaim(runId, async (claim) => {
        if (await store.getRun(runId)) throw new TroupeError(ErrorCode.RUN_ALREADY_ACTIVE, `run "${runId}" already exists`, { details: { runId } });
        const record = newRecord({ id: runId, crew: definition.id, version: definition.version, source: submitOptions.source, input: submitOptions.input, trace: undefined });
        await writes.write([put(layout.run(runId), record)], claim);
        await o.storage.release(claim);
      });
      return runId;
    },

    loadedRuns: () => [...hosts.keys()],

    get: (runId) => {
      const slot = slots.get(runId);
      return slot && handle(slot);
    },

    async runs() {
      const records = await store.listRuns();
      return records.sort(newestRunFirst);
    },

    async approvals(filter = {}) {
      const all = await store.listApprovals();
      return all
        .filter((a) => (filter.status === undefined || a.status === filter.status) && (filter.runId === undefined || a.runId === filter.runId))
        .sort((a, b) => Number(b.status === 'pending') - Number(a.status === 'pending') || a.createdAt - b.createdAt);
    },

    approve: (approvalId, approveOptions = {}) => decide(approvalId, { decision: 'approve', ...approveOptions }),

    reject(approvalId, reason) {
      if (typeof reason !== 'string' || !reason) throw new TypeError('reject(approvalId, reason) needs a reason for the model and the audit trail');
      return decide(approvalId, { decision: 'reject', reason });
    },

    async tell(to, type, payload, sendOptions = {}) {
      ensureRunning();
      const envelope = parseEnvelope(
        {
          id: o.ids('env'),
          from: sendOptions.from ?? `${askInbox}/node`,
          to,
          type,
          payload,
          ...(sendOptions.corr ? { corr: sendOptions.corr } : {}),
          ...(sendOptions.replyTo ? { replyTo: sendOptions.replyTo } : {}),
          seq: 0,
          ts: o.clock.now(),
        },
        { maxBytes: o.maxEnvelopeBytes },
      );
      await route(envelope);
    },

    async ask(to, type, payload, askOptions = {}) {
      ensureRunning();
      const corr = askOptions.corr ?? o.ids('ask');
      const timeoutMs = askOptions.timeoutMs ?? o.askTimeoutMs;
      const envelope = parseEnvelope(
        { id: o.ids('env'), from: askOptions.from ?? `${askInbox}/${corr}`, to, type, payload, corr, replyTo: `${askInbox}/${corr}`, seq: 0, ts: o.clock.now() },
        { maxBytes: o.maxEnvelopeBytes },
      );
      const reply = asks.wait(corr, timeoutMs, { to, type });
      try {
        await route(envelope);
      } catch (error) {
        asks.cancel(corr);
        throw error;
      }
      return reply;
    },

    async deliver(value) {
      ensureRunning();
      await route(validatePayload(parseEnvelope(value, { maxBytes: o.maxEnvelopeBytes })));
    },

    async receive(bytes) {
      ensureRunning();
      await route(validatePayload(decodeEnvelope(bytes, { maxBytes: o.maxEnvelopeBytes })));
    },

    close() {
      closing ??= (async () => {
        status = 'closing';
        working = false;
        stopPolling?.();
        offLeaseLost?.();
        offAvailable?.();
        offMail?.();
        await taking?.catch(() => {});
        asks.rejectAll(new TroupeError(ErrorCode.NODE_CLOSED, 'node closed before the reply arrived'));
        for (const cancel of idleTimers.values()) cancel();
        idleTimers.clear();
        await Promise.all([...slots.values()].map((slot) => slot.passivating));
        await Promise.all([...hosts.values()].map((host) => host.stop()));
        hosts.clear();
        // After the final checkpoints: from here on another node may resume these runs.
        const unloaded = [...slots.values()].flatMap((slot) => (slot.passive?.claim ? [slot.passive.claim] : []));
        await Promise.all([...claims.values(), ...unloaded].map((claim) => o.storage.release(claim)));
        claims.clear();
        if (identity) await o.storage.release(identity).catch(() => {});
        for (const slot of [...slots.values()]) closeSlot(slot);
        tracing.close();
        stalls.close();
        await transport?.close();
        events.end();
        // The audit heads committed by the final checkpoints must be saved before the
        // process may exit, or truncating those records would go unnoticed.
        const unsaved = await security.audit.flush().then(() => undefined, (error: unknown) => error);
        // The storage was opened by the caller, who closes it.
        status = 'closed';
        if (unsaved) throw unsaved;
      })();
      return closing;
    },
    [Symbol.asyncDispose]() {
      return node.close();
    },
  };

  if (options.transport) {
    transport = await options.transport({
      nodeId: o.nodeId,
      storage: o.storage,
      // Peers' envelopes are untrusted: validated and bounded like any other input, the
      // payload of every registered message type included (core/protocol.ts). A refusal is
      // INVALID_ENVELOPE, which the transport dead-letters: nothing reaches a run. An
      // envelope the transport's frame decoding already validated (its receipt says within
      // how many bytes) is not parsed twice.
      // Then admitted against the authenticated sender (core/peer-admission.ts): a peer
      // speaks for itself only, about runs it takes part in; ENVELOPE_REFUSED otherwise.
      // They wait for this node's unfinished runs to be resumed (the transport acknowledges
      // nothing meanwhile): a peer resending to a run here after a restart would otherwise
      // find no actor yet, and its envelope would be refused for good (UNKNOWN_ACTOR).
      deliver: async (envelope, fromNode, receipt) => {
        ensureRunning();
        const checked = validatePayload(
          receipt.checkedWithin !== undefined && receipt.checkedWithin <= o.maxEnvelopeBytes ? envelope : parseEnvelope(envelope, { maxBytes: o.maxEnvelopeBytes }),
        );
        await runsResumed;
        ensureRunning();
        const admitted = admitPeerEnvelope(checked, fromNode, { nodeId: o.nodeId, run: placementOf });
        if (admitted) await admitted;
        return route(checked, receipt);
      },
    });
  }
  try {
    // Replies to asks of this node's earlier incarnation: nobody waits for them any more.
    if (shared) await mail.dropStaleReplies();
    if (o.resume) await node.resumeAll();
  } finally {
    resumeDone();
  }
  return node;
}

/**
 * Holds `node:<nodeId>` for the node's life on a shared storage: one node per id in a
 * cluster, since each node's audit chain is named by its id. (`:` cannot be in a run id.)
 */
async function claimNodeId(storage: Storage, nodeId: string, owner: string): Promise<RunClaim> {
  try {
    return await storage.claim(`node:${nodeId}`, owner);
  } catch (error) {
    if (!isTroupeError(error, ErrorCode.RUN_CLAIMED)) throw error;
    throw new TroupeError(ErrorCode.CONFIG_INVALID, `node id "${nodeId}" is in use on ${storage.location} by ${String(error.details.holder)}; every node sharing a database needs its own id (--node-id)`, {
      cause: error,
      details: { nodeId, holder: error.details.holder },
    });
  }
}

export { ROOT_ACTOR_ID };
