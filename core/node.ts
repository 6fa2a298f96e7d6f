import type { InspectionEvent, Observer } from 'xstate';
import type { AuditLog } from './audit-log.js';
import { envSecrets, type SecretsProvider } from './secrets.js';
import { createSecurityContext } from './security.js';
import { createWriteQueue } from './write-queue.js';
import { ApprovalDecisionSchema, type ApprovalDecision, type ApprovalRecord } from './approvals.js';
import { randomIds, systemClock, type Clock, type IdGenerator } from './clock.js';
import { DEFAULT_MAX_FRAME_BYTES } from './codec.js';
import { decodeEnvelope, parseAddress, parseEnvelope, type Address, type Envelope } from './envelope.js';
import { ErrorCode, TroupeError } from './errors.js';
import { EventHub, type RunEvent } from './events.js';
import type { ModelProviders } from './model.js';
import { runHistory, writeFork, type HistoryEntry } from './history.js';
import { upgradeCheckpoint } from './migrations.js';
import { assertRunId, createRunStore, type RunRecord } from './run-store.js';
import { ASK_PREFIX, RunHost, ROOT_ACTOR_ID, type RunResult } from './run-host.js';
import { PART_ACTOR_ID, SystemMessage, type NodeTransport, type SpawnPayload, type TransportFactory } from './transport.js';
import type { RunnableDefinition } from './runtime.js';
import type { Storage } from './storage.js';

/** Options of {@link createNode}. */
export interface NodeOptions {
  storage: Storage;
  /** Model providers by id; agents name them as `provider:model`. */
  models?: ModelProviders;
  /** Definitions this node can resume by id (unfinished runs of them resume on start). */
  crews?: readonly RunnableDefinition[];
  /** Resume unfinished runs of registered crews when the node starts. Default `true`. */
  resume?: boolean;
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
}

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
}

/** Options of {@link TroupeNode.run}. */
export interface RunOptions {
  input: string;
  /** Defaults to a fresh id. */
  runId?: string;
  /** Module the definition came from, recorded so `troupe resume` can load it again. */
  source?: string;
}

/** A run being executed by a node. */
export interface RunHandle {
  readonly id: string;
  readonly status: RunHost['status'];
  /** Resolves with the outcome when completed; rejects with `RUN_FAILED` when the run fails. */
  result(): Promise<RunResult>;
  /** Resolves with the outcome, completed or failed. */
  settled(): Promise<RunResult>;
  /** Typed progress events from now until the run ends or stops. */
  events(signal?: AbortSignal): AsyncIterable<RunEvent>;
  subscribe(listener: (event: RunEvent) => void): () => void;
  /** Checkpoints and stops the run here; it stays resumable. */
  stop(): Promise<void>;
}

/** Lifecycle of a node. */
export type NodeStatus = 'running' | 'closing' | 'closed';

/** Options of {@link TroupeNode.tell} and {@link TroupeNode.ask}. */
export interface SendOptions {
  from?: Address;
  corr?: string;
}

/** One process's host of actors. Create with {@link createNode}. */
export interface TroupeNode extends AsyncDisposable {
  readonly status: NodeStatus;
  /** Every run's events. */
  subscribe(listener: (event: RunEvent) => void): () => void;
  run(definition: RunnableDefinition, options: RunOptions): Promise<RunHandle>;
  /**
   * Resumes every unfinished run of the registered crews (what `createNode` does unless
   * `resume: false`); subscribe first to see their events from the start.
   */
  resumeAll(): Promise<RunHandle[]>;
  /** Resumes an unfinished run from its latest checkpoint. */
  resume(runId: string, definition?: RunnableDefinition): Promise<RunHandle>;
  /** Every checkpoint of a run with the state of each actor at it, oldest first. */
  history(runId: string): Promise<HistoryEntry[]>;
  /**
   * Starts a new run from checkpoint `at` of `runId`. Work recorded up to that checkpoint is
   * replayed from the journal, not redone; the original run is not touched.
   */
  fork(runId: string, options: { at: number; runId?: string; definition?: RunnableDefinition }): Promise<RunHandle>;
  /** This node's name among its peers. */
  readonly nodeId: string;
  /** The node's append-only, hash-chained audit log (model and tool calls, permissions, approvals, messages). */
  readonly audit: AuditLog;
  /** The active run `runId`, if this node hosts it. */
  get(runId: string): RunHandle | undefined;
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
  ask(to: Address, type: string, payload: unknown, options?: SendOptions & { timeoutMs?: number }): Promise<Envelope>;
  /** Accepts an untrusted envelope object: validated, then routed. Throws on bad input. */
  deliver(value: unknown): Promise<void>;
  /** Accepts untrusted msgpack bytes holding one envelope. Throws on bad input. */
  receive(bytes: Uint8Array): Promise<void>;
  close(): Promise<void>;
}


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
  };
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(o.nodeId)) throw new TypeError(`nodeId "${o.nodeId}" must match /^[A-Za-z0-9_-]{1,64}$/`);
  // Replies to this node's asks come back to `_ask.<node>/<corr>`, wherever the asked actor lives.
  const askInbox = `${ASK_PREFIX}.${o.nodeId}`;
  let transport: NodeTransport | undefined;
  const store = createRunStore(o.storage);
  const writes = createWriteQueue(o.storage, { sync: o.sync });
  const security = await createSecurityContext(o.storage, { secrets: options.secrets ?? envSecrets(), clock: o.clock });
  const hosts = new Map<string, RunHost>();
  const events = new EventHub<RunEvent>();
  const asks = new Map<string, { resolve(e: Envelope): void; reject(e: unknown): void; cancel(): void }>();
  let status: NodeStatus = 'running';
  let closing: Promise<void> | undefined;

  const ensureRunning = () => {
    if (status !== 'running') throw new TroupeError(ErrorCode.NODE_CLOSED, `node is ${status}`);
  };

  const handle = (host: RunHost): RunHandle => ({
    id: host.runId,
    get status() {
      return host.status;
    },
    result: () => host.result(),
    settled: () => host.settled(),
    events: (signal) => host.events.iterate(signal),
    subscribe: (listener) => host.events.subscribe(listener),
    stop: () => host.stop(),
  });

  const finishedHandle = (record: RunRecord): RunHandle => {
    const result: RunResult = { runId: record.id, status: record.status === 'failed' ? 'failed' : 'completed', output: record.output ?? '', error: record.error ?? null };
    const ended = new EventHub<RunEvent>();
    ended.end();
    return {
      id: record.id,
      status: result.status,
      settled: async () => result,
      result: async () => {
        if (result.status === 'failed') {
          throw new TroupeError(ErrorCode.RUN_FAILED, `run ${record.id} failed: ${result.error?.message ?? 'unknown error'}`, { details: { runId: record.id, error: result.error } });
        }
        return result;
      },
      events: (signal) => ended.iterate(signal),
      subscribe: () => () => {},
      stop: async () => {},
    };
  };

  const sendRemote = (toNode: string, envelope: Envelope): Promise<void> => {
    if (toNode === o.nodeId) throw new TroupeError(ErrorCode.UNKNOWN_ACTOR, `no active actor at ${envelope.to}`, { details: { to: envelope.to } });
    if (!transport) {
      throw new TroupeError(ErrorCode.UNKNOWN_ACTOR, `${envelope.to} lives on node "${toNode}", and this node has no transport`, { details: { to: envelope.to, node: toNode } });
    }
    return transport.send(toNode, envelope);
  };

  /** Routes an envelope: to a local run's mailbox, a pending ask, a new run part, or a peer. */
  const route = async (envelope: Envelope): Promise<void> => {
    const { runId, actorId } = parseAddress(envelope.to);
    if (runId?.startsWith(`${ASK_PREFIX}.`)) {
      if (runId !== askInbox) return sendRemote(runId.slice(ASK_PREFIX.length + 1), envelope);
      const pending = asks.get(actorId);
      if (!pending) return; // the asker timed out; a late answer is dropped
      asks.delete(actorId);
      pending.cancel();
      pending.resolve(envelope);
      return;
    }
    if (runId !== undefined && actorId.startsWith(`${PART_ACTOR_ID}.`)) {
      const target = actorId.slice(PART_ACTOR_ID.length + 1);
      if (target !== o.nodeId) return sendRemote(target, envelope);
      if (envelope.type === SystemMessage.spawn) return spawnPart(runId, envelope);
      const part = hosts.get(runId);
      if (part && part.status === 'running') return part.accept(envelope);
      return; // the part already ended here: nothing to do
    }
    const host = runId === undefined ? undefined : hosts.get(runId);
    if (host && !host.isLocal(actorId)) return sendRemote(host.nodeOf(actorId), envelope);
    if (host && host.status === 'running') return host.accept(envelope);
    throw new TroupeError(ErrorCode.UNKNOWN_ACTOR, `no active actor at ${envelope.to}`, { details: { to: envelope.to } });
  };

  const newRecord = (r: Pick<RunRecord, 'id' | 'crew' | 'version' | 'input' | 'part'> & { source: string | undefined }): RunRecord => {
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
    };
  };

  /** Starts hosting the actors a peer placed on this node for one of its runs. */
  const spawnPart = async (runId: string, envelope: Envelope): Promise<void> => {
    const spawn = envelope.payload as SpawnPayload;
    const existing = await store.getRun(runId);
    if (existing) return; // a redelivered spawn: the part exists (maybe resumed, maybe done)
    const definition = o.crews.get(spawn.crew);
    if (!definition) {
      throw new TroupeError(ErrorCode.CREW_NOT_REGISTERED, `node "${o.nodeId}" was asked to host ${spawn.actors.join(', ')} of crew "${spawn.crew}", which it does not know`, {
        details: { runId, crew: spawn.crew },
      });
    }
    const record = newRecord({ id: runId, crew: spawn.crew, version: spawn.version, source: spawn.source, input: spawn.input, part: { origin: spawn.origin, actors: spawn.actors } });
    const host = newHost(definition, record);
    track(host);
    host.start(spawn.input);
    // Acknowledged only once the part is on disk: a crash now resumes it, never loses it.
    await host.checkpointNow();
  };

  const track = (host: RunHost) => {
    hosts.set(host.runId, host);
    void host.settled().then(() => {
      if (hosts.get(host.runId) === host) hosts.delete(host.runId);
    });
  };

  const newHost = (definition: RunnableDefinition, record: RunRecord) =>
    new RunHost({
      definition,
      record,
      store,
      models: o.models,
      clock: o.clock,
      ids: o.ids,
      sync: o.sync,
      inspect: o.inspect,
      events,
      nodeId: o.nodeId,
      route,
      writes,
      security,
    });

  const decide = async (approvalId: string, raw: ApprovalDecision): Promise<void> => {
    ensureRunning();
    const decision = ApprovalDecisionSchema.parse(raw);
    const record = await store.getApproval(approvalId);
    if (!record) throw new TroupeError(ErrorCode.APPROVAL_NOT_FOUND, `no approval "${approvalId}" in ${o.storage.location}`, { details: { approvalId } });
    if (record.status !== 'pending') {
      throw new TroupeError(ErrorCode.APPROVAL_DECIDED, `approval ${approvalId} was already ${record.status}`, { details: { approvalId, status: record.status } });
    }
    let host = hosts.get(record.runId);
    if (!host && o.crews.has((await store.requireRun(record.runId)).crew)) {
      await node.resume(record.runId);
      host = hosts.get(record.runId);
    }
    if (!host || host.status !== 'running') {
      throw new TroupeError(ErrorCode.RUN_NOT_ACTIVE, `run ${record.runId} is not active on this node; resume it first`, { details: { runId: record.runId } });
    }
    await host.decide(approvalId, decision);
  };

  const node: TroupeNode = {
    get status() {
      return status;
    },
    nodeId: o.nodeId,
    audit: security.audit,
    subscribe: (listener) => events.subscribe(listener),

    async run(definition, runOptions) {
      ensureRunning();
      if (typeof runOptions?.input !== 'string') throw new TypeError('run(definition, { input }) needs a string input');
      const runId = runOptions.runId ?? o.ids('run');
      assertRunId(runId);
      if (hosts.has(runId) || (await store.getRun(runId))) {
        throw new TroupeError(ErrorCode.RUN_ALREADY_ACTIVE, `run "${runId}" already exists`, { details: { runId } });
      }
      const record = newRecord({ id: runId, crew: definition.id, version: definition.version, source: runOptions.source, input: runOptions.input });
      const host = newHost(definition, record);
      track(host);
      host.start(runOptions.input);
      return handle(host);
    },

    async resume(runId, definition) {
      ensureRunning();
      const active = hosts.get(runId);
      if (active) return handle(active);
      const record = await store.requireRun(runId);
      // A finished run resolves at once with its recorded outcome.
      if (record.status === 'completed' || record.status === 'failed') return finishedHandle(record);
      const def = definition ?? o.crews.get(record.crew);
      if (!def) {
        throw new TroupeError(ErrorCode.CREW_NOT_REGISTERED, `run "${runId}" needs crew "${record.crew}", which this node does not know`, {
          details: { runId, crew: record.crew },
        });
      }
      if (def.id !== record.crew) throw new TypeError(`run "${runId}" belongs to crew "${record.crew}", not "${def.id}"`);
      const checkpoint = await store.latestCheckpoint(runId);
      if (!checkpoint) throw new TroupeError(ErrorCode.RUN_NOT_FOUND, `run "${runId}" has no checkpoint to resume from`, { details: { runId } });
      // Throws SNAPSHOT_VERSION (and writes nothing) when no migration reaches this version.
      const upgraded = upgradeCheckpoint(checkpoint, def, def.migrations ?? []);
      record.version = def.version;
      const host = newHost(def, record);
      track(host);
      await host.restore(upgraded);
      return handle(host);
    },

    history: (runId) => runHistory(store, runId, ROOT_ACTOR_ID),

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
      if (hosts.has(forkId) || (await store.getRun(forkId))) throw new TroupeError(ErrorCode.RUN_ALREADY_ACTIVE, `run "${forkId}" already exists`, { details: { runId: forkId } });
      await writeFork(store, source, checkpoint, { runId: forkId, now: o.clock.now() });
      return node.resume(forkId, forkOptions.definition);
    },

    async resumeAll() {
      const resumed: RunHandle[] = [];
      for (const record of await store.listRuns()) {
        if ((record.status === 'running' || record.status === 'waiting') && o.crews.has(record.crew)) resumed.push(await node.resume(record.id));
      }
      return resumed;
    },

    get: (runId) => {
      const host = hosts.get(runId);
      return host && handle(host);
    },

    async runs() {
      const records = await store.listRuns();
      return records.sort((a, b) => b.startedAt - a.startedAt || b.id.localeCompare(a.id));
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
      const reply = new Promise<Envelope>((resolve, reject) => {
        const cancel = o.clock.setTimer(() => {
          asks.delete(corr);
          reject(new TroupeError(ErrorCode.ASK_TIMEOUT, `no reply from ${to} to "${type}" within ${timeoutMs} ms`, { details: { to, type, timeoutMs } }));
        }, timeoutMs);
        asks.set(corr, { resolve, reject, cancel });
      });
      try {
        await route(envelope);
      } catch (error) {
        asks.get(corr)?.cancel();
        asks.delete(corr);
        throw error;
      }
      return reply;
    },

    async deliver(value) {
      ensureRunning();
      await route(parseEnvelope(value, { maxBytes: o.maxEnvelopeBytes }));
    },

    async receive(bytes) {
      ensureRunning();
      await route(decodeEnvelope(bytes, { maxBytes: o.maxEnvelopeBytes }));
    },

    close() {
      closing ??= (async () => {
        status = 'closing';
        for (const pending of asks.values()) {
          pending.cancel();
          pending.reject(new TroupeError(ErrorCode.NODE_CLOSED, 'node closed before the reply arrived'));
        }
        asks.clear();
        await Promise.all([...hosts.values()].map((host) => host.stop()));
        hosts.clear();
        await transport?.close();
        events.end();
        // The storage was opened by the caller, who closes it.
        status = 'closed';
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
      // Peers' envelopes are untrusted: validated and bounded like any other input.
      deliver: (envelope) => {
        ensureRunning();
        return route(parseEnvelope(envelope, { maxBytes: o.maxEnvelopeBytes }));
      },
    });
  }
  if (o.resume) await node.resumeAll();
  return node;
}

export { ROOT_ACTOR_ID };
