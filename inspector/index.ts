/**
 * The inspector: a local web page that follows every agent's state machine live and replays
 * finished runs from their journal. `createInspector` ties a node's events and a storage's
 * journal to the page (`page.ts`) over a WebSocket (`server.ts`); `graph.ts` turns machines
 * into the diagrams the page draws.
 * @module
 */
import type { WebSocket } from 'ws';
import { RUN_ID } from '../core/ids.js';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { RunEvent } from '../core/events.js';
import { ROOT_ACTOR_ID, type TroupeNode } from '../core/node.js';
import type { RunStore } from '../core/run-store.js';
import { createRunStore, newestRunFirst, type JournalEntry, type RunRecord } from '../core/run-store.js';
import type { RunnableDefinition } from '../core/runtime.js';
import type { Storage } from '../core/storage.js';
import { defaultGraphs, graphsOf, type MachineGraph } from './graph.js';
import { inspectorPage } from './page.js';
import { stepView, textAt } from './step-view.js';
import { clean, FULL_TEXT_CHARS, preview, PREVIEW_CHARS, STEP_PREVIEW_CHARS, type TextPreview } from './text.js';
import { actionOf } from './actions.js';
import { LOOPBACK_HOSTS, startInspectorServer, type LoopbackHost } from './server.js';

export { ANY_STATE, defaultGraphs, graphsOf, machineGraph, type GraphEdge, type GraphNode, type MachineGraph } from './graph.js';
export { LOOPBACK_HOSTS, WS_PATH, type LoopbackHost } from './server.js';
export { statelySafe } from './stately.js';
export { stepView, textAt, STEP_MESSAGES, type StepCall, type StepMessage, type StepView } from './step-view.js';
export { clean, preview, FULL_TEXT_CHARS, PREVIEW_CHARS, STEP_PREVIEW_CHARS, type TextPreview } from './text.js';

/** Options of {@link createInspector}. */
export interface InspectorOptions {
  /** Where runs are stored: the run list and replays come from its index and journals. */
  storage: Storage;
  /** A node to follow live (its runs' events are streamed as they happen). */
  node?: TroupeNode;
  /** Loopback only: the inspector has no authentication. Default `127.0.0.1`. */
  host?: LoopbackHost;
  /** 0 (the default) picks a free port; read it from {@link Inspector.url}. */
  port?: number;
  /**
   * Definitions whose real machines are drawn for their runs (matched by crew id). Runs of
   * other crews are drawn with Troupe's standard crew and agent machines.
   */
  machines?: readonly RunnableDefinition[];
  /**
   * Where the page's decisions and forks go. Default with `node`: the node's own
   * `approve`, `reject` and `fork` (what `troupe approve`/`reject`/`fork` call). Without
   * either, the page is read-only and says so.
   */
  actions?: InspectorActions;
  /** The secret actions must carry. Default: 24 random bytes, base64url; read it from {@link Inspector.token}. */
  token?: string;
  /**
   * Runs that neither `node` hosts nor have ended are re-read from `storage` this often while
   * a page watches them (a run of another process, read through its control socket). Default 300.
   */
  pollMs?: number;
}

/**
 * The decisions and forks a page may ask for, each the same call the CLI makes. Errors are
 * shown to the person on the page; a `TroupeError`'s `code` goes with its message.
 */
export interface InspectorActions {
  approve(approvalId: string, options: { args?: unknown; reason?: string }): Promise<void>;
  reject(approvalId: string, reason: string): Promise<void>;
  /** Starts a new run from checkpoint `at` of `runId`; absent where forking is not possible here. */
  fork?(runId: string, at: number): Promise<{ runId: string }>;
}

/** A waiting approval as the page shows it. */
export interface ApprovalView {
  id: string;
  runId: string;
  agentId: string;
  tool: string;
  /** The arguments the tool would run with (JSON), capped at {@link FULL_TEXT_CHARS}. */
  args: TextPreview;
  reason: string;
  message: string;
  createdAt: number;
}

/** A running inspector. Create with {@link createInspector}. */
export interface Inspector extends AsyncDisposable {
  /** The page, e.g. `http://127.0.0.1:41234/`. */
  readonly url: string;
  readonly status: 'open' | 'closing' | 'closed';
  /** Pages (and other WebSocket clients) connected now. */
  readonly clients: number;
  /** What every action (approve, reject, fork) must carry; `troupe inspect` prints it. */
  readonly token: string;
  /** Closes every connection and the listener; the node and storage stay open. Idempotent. */
  close(): Promise<void>;
}

/**
 * One step of a run as the page shows it; the same shape whether live or replayed. `seq` is
 * the step's journal entry (absent on live events that have none): the page asks for a
 * step's details by it.
 */
export type TimelineEvent = (
  | { kind: 'state'; ts: number; actor: string; state: string }
  | { kind: 'message'; ts: number; from: string; to: string; messageType: string }
  | { kind: 'call'; ts: number; actor: string; call: 'model' | 'tool'; name: string; ok: boolean; callId: string; ms: number; tokens: number; cost?: number }
  | { kind: 'approval'; ts: number; actor: string; approvalId: string; decision: 'requested' | 'approve' | 'reject'; tool: string }
  | { kind: 'run'; ts: number; status: 'started' | 'resumed' | 'completed' | 'failed'; detail: string }
) & { seq?: number };

/** A row of the page's run list. */
export interface RunSummary {
  id: string;
  crew: string;
  status: RunRecord['status'];
  /** Hosted by the followed node right now. */
  live: boolean;
  startedAt: number;
  updatedAt: number;
  checkpoints: number;
  input: string;
  output: string;
  error: string;
  /** On a fork: the run and checkpoint it started from. */
  forkedFrom?: { runId: string; checkpoint: number };
}

const MAX_TIMELINE = 20_000;
const MAX_RUNS = 200;
const MAX_BUFFERED = 4 * 1024 * 1024;

/** `runId/actor` → `actor`; addresses outside the run stay whole. */
const local = (address: unknown, runId: string) => clean(typeof address === 'string' && address.startsWith(`${runId}/`) ? address.slice(runId.length + 1) : address);

/** The page's view of a journal entry; entries it does not show give `undefined`. */
export function fromJournal(entry: JournalEntry, runId: string): TimelineEvent | undefined {
  const item = journalItem(entry, runId);
  return item && { ...item, seq: entry.seq };
}

const tokensOf = (usage: unknown) => {
  const u = (usage ?? {}) as { inputTokens?: unknown; outputTokens?: unknown };
  return (Number(u.inputTokens) || 0) + (Number(u.outputTokens) || 0);
};
const costOf = (cost: unknown) => (typeof cost === 'number' && Number.isFinite(cost) ? { cost } : {});

function journalItem(entry: JournalEntry, runId: string): TimelineEvent | undefined {
  const d = entry.data;
  const ts = entry.ts;
  switch (entry.kind) {
    case 'state':
      return { kind: 'state', ts, actor: clean(entry.actor), state: clean(d.state) };
    case 'message':
      // Dead letters are never announced live; leaving them out keeps both views identical.
      return d.deadLetter ? undefined : { kind: 'message', ts, from: local(entry.actor, runId), to: local(d.to, runId), messageType: clean(d.type) };
    case 'model.call':
      return { kind: 'call', ts, actor: clean(entry.actor), call: 'model', name: clean(d.model), ok: true, callId: clean(d.callId), ms: Number(d.ms) || 0, tokens: tokensOf(d.usage), ...costOf(d.cost) };
    case 'tool.call':
      return { kind: 'call', ts, actor: clean(entry.actor), call: 'tool', name: clean(d.tool), ok: d.ok === true, callId: clean(d.callId), ms: Number(d.ms) || 0, tokens: 0 };
    case 'approval.requested':
      return { kind: 'approval', ts, actor: clean(entry.actor), approvalId: clean(d.approvalId), decision: 'requested', tool: clean(d.tool) };
    case 'approval.decided':
      return { kind: 'approval', ts, actor: clean(entry.actor), approvalId: clean(d.approvalId), decision: d.decision === 'reject' ? 'reject' : 'approve', tool: '' };
    case 'run.started':
      return { kind: 'run', ts, status: 'started', detail: '' };
    case 'run.resumed':
      return { kind: 'run', ts, status: 'resumed', detail: `from checkpoint ${clean(d.checkpoint)}` };
    case 'run.completed':
      return { kind: 'run', ts, status: 'completed', detail: clean(d.output) };
    case 'run.failed':
      return { kind: 'run', ts, status: 'failed', detail: clean((d.error as { message?: unknown } | undefined)?.message) };
    default:
      return undefined;
  }
}

/** The page's view of a live event. Replayed calls are left out: the journal never has them. */
export function fromRunEvent(event: RunEvent, ts: number): TimelineEvent | undefined {
  const item = liveItem(event, ts);
  return item && (event.journalSeq === undefined ? item : { ...item, seq: event.journalSeq });
}

function liveItem(event: RunEvent, ts: number): TimelineEvent | undefined {
  const { runId } = event;
  switch (event.type) {
    case 'state':
      return { kind: 'state', ts, actor: clean(event.actor), state: clean(event.state) };
    case 'message':
      return { kind: 'message', ts, from: local(event.from, runId), to: local(event.to, runId), messageType: clean(event.messageType) };
    case 'model.call':
      return event.replayed ? undefined : { kind: 'call', ts, actor: clean(event.actor), call: 'model', name: clean(event.model), ok: true, callId: clean(event.callId), ms: event.ms, tokens: tokensOf(event.usage), ...costOf(event.cost) };
    case 'tool.call':
      return event.replayed ? undefined : { kind: 'call', ts, actor: clean(event.actor), call: 'tool', name: clean(event.tool), ok: event.ok, callId: clean(event.callId), ms: event.ms, tokens: 0 };
    case 'approval.requested':
      return { kind: 'approval', ts, actor: clean(event.actor), approvalId: clean(event.approvalId), decision: 'requested', tool: clean(event.tool) };
    case 'approval.decided':
      return { kind: 'approval', ts, actor: clean(event.actor), approvalId: clean(event.approvalId), decision: event.decision, tool: '' };
    case 'run.started':
      return { kind: 'run', ts, status: 'started', detail: '' };
    case 'run.resumed':
      return { kind: 'run', ts, status: 'resumed', detail: `from checkpoint ${event.checkpoint}` };
    case 'run.completed':
      return { kind: 'run', ts, status: 'completed', detail: clean(event.output) };
    case 'run.failed':
      return { kind: 'run', ts, status: 'failed', detail: clean(event.error?.message) };
    default:
      return undefined;
  }
}

/**
 * What the inspector knows of a run its node hosts: what happened before it was watched
 * (`head`, from the journal), then what happened since (`tail`). A run seen starting or
 * resuming takes its tail from live events. A run joined mid-way takes it from the journal
 * too, read on each checkpoint: live events before the join cannot be told apart from
 * their journal copies (a loop of steps repeats identical events), journal seqs can.
 */
interface Feed {
  head: Promise<TimelineEvent[]>;
  tail: TimelineEvent[];
  /** For a joined run: the last journal entry read, and the reads in order. */
  journal?: { seq: number; reads: Promise<unknown> };
}

interface Session {
  ws: WebSocket;
  runId: string | undefined;
  /** Bumped on every selection, so a slow journal read cannot answer a newer one. */
  token: number;
  loading: boolean;
}

const RunId = z.string().regex(RUN_ID);
const Seq = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);

/** What a page may ask over the WebSocket: reads only (actions go through `POST /action`). */
const ClientMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('runs') }),
  z.object({ type: z.literal('select'), runId: RunId }),
  z.object({ type: z.literal('unselect') }),
  z.object({ type: z.literal('step'), runId: RunId, seq: Seq }),
  z.object({ type: z.literal('full'), runId: RunId, seq: Seq, path: z.array(z.union([z.string().max(40), z.number().int().min(0)])).min(1).max(8) }),
  z.object({ type: z.literal('checkpoints'), runId: RunId }),
]);

/**
 * Starts the inspector: a page on `url` that lists the runs in `storage`, draws each agent's
 * state machine with its current state highlighted, and shows the messages between actors;
 * live for runs of `node`, replayed from the journal for the others. Everything sent to the
 * page is metadata plus previews capped at {@link PREVIEW_CHARS}; no message bodies.
 */
export async function createInspector(options: InspectorOptions): Promise<Inspector> {
  if (!options?.storage) throw new TypeError('createInspector({ storage }) needs the storage the runs are in');
  const host = options.host ?? '127.0.0.1';
  if (!LOOPBACK_HOSTS.includes(host)) throw new TypeError(`inspector host must be one of ${LOOPBACK_HOSTS.join(', ')}: it has no authentication`);
  const port = options.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65_535) throw new TypeError(`inspector port must be an integer 0..65535, not ${port}`);
  if (options.node && typeof options.node.subscribe !== 'function') throw new TypeError('createInspector({ node }) needs a TroupeNode');
  const definitions = new Map<string, RunnableDefinition>();
  for (const def of options.machines ?? []) {
    if (definitions.has(def.id)) throw new TypeError(`two machines given for crew "${def.id}"`);
    definitions.set(def.id, def);
  }
  const { node } = options;
  const store = createRunStore(options.storage);
  const feeds = new Map<string, Feed>();
  const sessions = new Set<Session>();
  let status: Inspector['status'] = 'open';
  const pendingApprovals = new Set<string>();
  if (options.token !== undefined && (typeof options.token !== 'string' || !/^\S{16,512}$/.test(options.token))) throw new TypeError('inspector token must be 16 to 512 characters without spaces: it is all that stands between a page and your runs');
  if (options.actions && (typeof options.actions.approve !== 'function' || typeof options.actions.reject !== 'function')) throw new TypeError('createInspector({ actions }) needs approve(approvalId, options) and reject(approvalId, reason)');
  const actionToken = options.token ?? randomBytes(24).toString('base64url');
  const actions: InspectorActions | undefined = options.actions ?? (node && nodeActions(node, store, definitions));
  /** What the page may offer: decisions and forks need an actions backend (and the token). */
  const actionsInfo = { decide: actions !== undefined, fork: actions?.fork !== undefined };
  let runsTimer: NodeJS.Timeout | undefined;
  let pollTimer: NodeJS.Timeout | undefined;
  const pollMs = options.pollMs ?? 300;
  if (!Number.isInteger(pollMs) || pollMs < 10) throw new TypeError(`inspector pollMs must be an integer of at least 10 ms, not ${pollMs}`);

  const send = (ws: WebSocket, message: unknown) => {
    if (ws.readyState !== ws.OPEN) return;
    // A page that cannot keep up is dropped rather than buffered without bound.
    if (ws.bufferedAmount > MAX_BUFFERED) return void ws.close(1013, 'too slow');
    ws.send(JSON.stringify(message));
  };

  /** Journal entries of `runId` after seq `after` (up to `upTo`), as the page shows them. */
  const readJournal = async (runId: string, after = 0, upTo = Infinity) => {
    // A range read: a long run is not decoded whole on every checkpoint.
    const entries: JournalEntry[] = await createRunStore(options.storage).journalBetween(runId, after, upTo);
    return { last: entries.at(-1)?.seq ?? after, timeline: entries.flatMap((e) => fromJournal(e, runId) ?? []) };
  };
  const readTimeline = async (runId: string, upTo = Infinity) => (await readJournal(runId, 0, upTo)).timeline;

  const summarize = (r: RunRecord): RunSummary => ({
    id: r.id,
    crew: clean(r.crew),
    status: r.status,
    live: node?.get(r.id) !== undefined,
    startedAt: r.startedAt,
    updatedAt: r.updatedAt,
    checkpoints: r.checkpoint,
    input: clean(r.input),
    output: clean(r.output),
    error: clean(r.error?.message),
    ...(r.forkedFrom ? { forkedFrom: { runId: clean(r.forkedFrom.runId), checkpoint: r.forkedFrom.checkpoint } } : {}),
  });
  const summaries = async (): Promise<RunSummary[]> =>
    (await store.listRuns())
      .sort(newestRunFirst)
      .slice(0, MAX_RUNS)
      .map(summarize);

  const sendRuns = async (targets: Iterable<Session>) => {
    const message = { type: 'runs', runs: await summaries() };
    for (const s of targets) send(s.ws, message);
  };
  const announceRuns = () => {
    clearTimeout(runsTimer);
    runsTimer = setTimeout(() => void sendRuns(sessions).catch(() => {}), 50);
  };

  const layouts = new Map<string, Promise<Record<string, MachineGraph>>>();
  type Machines = { graphs: Record<string, MachineGraph> } | { standard: { root: MachineGraph; agent: MachineGraph } };
  /** The laid-out machines of a crew: its definition's when given, else Troupe's standard ones. */
  const machinesOf = async (crewId: string | undefined): Promise<Machines> => {
    const def = crewId === undefined ? undefined : definitions.get(crewId);
    if (!def) return { standard: await defaultGraphs() };
    if (!layouts.has(def.id)) layouts.set(def.id, graphsOf(def));
    return { graphs: await layouts.get(def.id)! };
  };
  // Laid out now, not when the first page asks: elk takes a moment, a live run does not wait.
  for (const def of definitions.values()) layouts.set(def.id, graphsOf(def));
  layouts.forEach((p) => p.catch(() => {}));
  void defaultGraphs().catch(() => {});
  const graphsFor = (machines: Machines, timeline: readonly TimelineEvent[]): Record<string, MachineGraph> => {
    if ('graphs' in machines) return machines.graphs;
    const graphs: Record<string, MachineGraph> = { [ROOT_ACTOR_ID]: machines.standard.root };
    for (const e of timeline) if (e.kind === 'state' && e.actor !== ROOT_ACTOR_ID) graphs[e.actor] = machines.standard.agent;
    return graphs;
  };

  /** The approvals `runId` waits for, as the page shows them. */
  const approvalsOf = async (runId: string): Promise<ApprovalView[]> =>
    (await store.listApprovals())
      .filter((a) => a.runId === runId && a.status === 'pending')
      .sort((a, b) => a.createdAt - b.createdAt)
      .map((a) => ({ id: clean(a.id), runId: clean(a.runId), agentId: clean(a.agentId), tool: clean(a.tool), args: preview(a.args, FULL_TEXT_CHARS), reason: clean(a.reason), message: clean(a.message, 2_000), createdAt: a.createdAt }));
  const sendApprovals = async (runId: string) => {
    const watching = [...sessions].filter((s) => s.runId === runId);
    if (watching.length === 0) return;
    const message = { type: 'approvals', runId, approvals: await approvalsOf(runId) };
    for (const s of watching) send(s.ws, message);
  };

  const select = async (session: Session, runId: string) => {
    const token = ++session.token;
    session.runId = runId;
    session.loading = true;
    try {
      const record = await store.getRun(runId);
      // A foreign run is joined before its journal is read, so no entry falls between the two.
      const feed = feeds.get(runId) ?? (isForeignActive(record) ? poll(record!) : undefined);
      if (!record && !feed) {
        session.runId = undefined;
        return send(session.ws, { type: 'error', message: `no run "${runId}" in ${clean(options.storage.location)}` });
      }
      let timeline = feed ? await feed.head : await readTimeline(runId);
      const approvals = await approvalsOf(runId);
      const machines = await machinesOf(record?.crew);
      if (token !== session.token) return;
      // The tail is read after the awaits and before sending, so no live event falls between.
      if (feed) timeline = [...timeline, ...feed.tail];
      // A foreign run that is still going is followed too (by reading its journal as it grows).
      send(session.ws, { type: 'run', runId, run: record && summarize(record), live: node?.get(runId) !== undefined || polled.has(runId), graphs: graphsFor(machines, timeline), timeline: timeline.slice(-MAX_TIMELINE), approvals, actions: actionsInfo });
    } finally {
      // Live events flow from here on; a superseded selection leaves the newer one loading.
      if (token === session.token) session.loading = false;
    }
  };

  const publish = (runId: string, feed: Feed, item: TimelineEvent) => {
    feed.tail.push(item);
    if (feed.tail.length > MAX_TIMELINE) feed.tail.shift();
    for (const s of sessions) if (s.runId === runId && !s.loading) send(s.ws, { type: 'event', runId, event: item });
  };

  const join = (runId: string): Feed => {
    const feed: Feed = { head: Promise.resolve([]), tail: [], journal: { seq: 0, reads: Promise.resolve() } };
    const read = readJournal(runId).then(({ last, timeline }) => {
      feed.journal!.seq = last;
      return timeline;
    });
    read.catch(() => {});
    feed.head = read;
    feed.journal!.reads = read;
    return feed;
  };

  /** Publishes a joined run's journal entries written since the last read (reads run in order). */
  const catchUp = (runId: string, feed: Feed): Promise<unknown> => {
    const journal = feed.journal!;
    journal.reads = journal.reads
      .then(() => readJournal(runId, journal.seq))
      .then(({ last, timeline }) => {
        journal.seq = last;
        for (const item of timeline) publish(runId, feed, item);
        return timeline.some((e) => e.kind === 'approval');
      })
      .catch(() => false);
    return journal.reads;
  };

  /**
   * Runs nobody here hosts but that have not ended (another process's, read through its
   * control socket, or another node's on shared storage) are joined like a run attached
   * mid-way and re-read every `pollMs` while a page watches them: storage is all there is.
   */
  const polled = new Map<string, { feed: Feed; status: RunRecord['status'] }>();
  const isForeignActive = (record: RunRecord | undefined) => record !== undefined && (record.status === 'running' || record.status === 'waiting') && node?.get(record.id) === undefined;
  const poll = (record: RunRecord): Feed => {
    const feed = join(record.id);
    feeds.set(record.id, feed);
    polled.set(record.id, { feed, status: record.status });
    return feed;
  };
  let lastRuns = '';
  const tick = async () => {
    for (const [runId, p] of polled) {
      if (![...sessions].some((s) => s.runId === runId) || feeds.get(runId) !== p.feed) {
        polled.delete(runId);
        if (feeds.get(runId) === p.feed) feeds.delete(runId);
        continue;
      }
      const record = await store.getRun(runId);
      const sawApproval = await catchUp(runId, p.feed);
      if (sawApproval || record?.status !== p.status) void sendApprovals(runId).catch(() => {});
      if (record) p.status = record.status;
      if (!record || !isForeignActive(record)) {
        polled.delete(runId);
        // Ended: its journal is complete; replays read it from there.
        if (feeds.get(runId) === p.feed) feeds.delete(runId);
      }
    }
    if (sessions.size > 0) {
      const runs = await summaries();
      const text = JSON.stringify(runs);
      if (text !== lastRuns) {
        lastRuns = text;
        for (const s of sessions) send(s.ws, { type: 'runs', runs });
      }
    }
  };
  const schedule = () => {
    pollTimer = setTimeout(() => void tick().catch(() => {}).finally(() => status === 'open' && schedule()), pollMs);
    pollTimer.unref?.();
  };

  const onEvent = (event: RunEvent) => {
    const { runId } = event;
    let feed = feeds.get(runId);
    if (event.type === 'run.started') feeds.set(runId, (feed = { head: Promise.resolve([]), tail: [] }));
    else if (event.type === 'run.resumed') {
      // The journal up to the checkpoint it resumed from is exactly what came before.
      const head = store.checkpoint(runId, event.checkpoint).then((c) => readTimeline(runId, c?.journalSeq ?? 0));
      head.catch(() => {});
      feeds.set(runId, (feed = { head, tail: [] }));
    } else if (!feed) feeds.set(runId, (feed = join(runId)));
    const { journal } = feed;
    if (!journal) {
      const item = fromRunEvent(event, Date.now());
      if (item) publish(runId, feed, item);
    } else if (event.type === 'checkpoint') catchUp(runId, feed);
    if (event.type.startsWith('run.') || event.type.startsWith('approval.')) announceRuns();
    // The approval record is written with the batch of this fact: read it once that is durable.
    if (event.type.startsWith('approval.')) pendingApprovals.add(runId);
    if (event.type === 'checkpoint' && pendingApprovals.delete(runId)) void sendApprovals(runId).catch(() => {});
    // Once a run has ended its journal is complete and durable: replays read it from there.
    if (event.type === 'run.completed' || event.type === 'run.failed') {
      const ended = feed;
      void (journal?.reads ?? Promise.resolve()).then(() => feeds.get(runId) === ended && feeds.delete(runId));
    }
  };

  /** One client request; a malformed one is answered with an error, the socket stays. */
  const handle = (session: Session, data: unknown, isBinary: boolean) => {
    let parsed: unknown;
    try {
      parsed = isBinary ? undefined : JSON.parse(String(data));
    } catch {
      parsed = undefined;
    }
    const request = ClientMessage.safeParse(parsed);
    if (!request.success) return send(session.ws, { type: 'error', message: 'bad request: expected {"type":"runs"|"select"|"unselect"|"step"|"full"|"checkpoints"}' });
    const r = request.data;
    if (r.type === 'unselect') return void (session.runId = undefined);
    const work =
      r.type === 'runs'
        ? sendRuns([session])
        : r.type === 'select'
          ? select(session, r.runId)
          : r.type === 'step'
            ? sendStep(session, r.runId, r.seq)
            : r.type === 'full'
              ? sendFull(session, r.runId, r.seq, r.path)
              : sendCheckpoints(session, r.runId);
    void work.catch((error: unknown) => send(session.ws, { type: 'error', message: clean((error as Error)?.message) }));
  };

  const sendStep = async (session: Session, runId: string, seq: number) => {
    const step = await stepView(store, runId, seq, STEP_PREVIEW_CHARS);
    if (!step) return send(session.ws, { type: 'error', message: `run "${runId}" has no step ${seq}` });
    send(session.ws, { type: 'step', runId, seq, step });
  };
  const sendFull = async (session: Session, runId: string, seq: number, path: Array<string | number>) => {
    const step = await stepView(store, runId, seq, FULL_TEXT_CHARS);
    const text = step && textAt(step, path);
    if (!text) return send(session.ws, { type: 'error', message: `step ${seq} of run "${runId}" has no text at ${clean(path.join('.'))}` });
    send(session.ws, { type: 'full', runId, seq, path, text });
  };
  const sendCheckpoints = async (session: Session, runId: string) => {
    const [marks, states] = await Promise.all([store.checkpointMarks(runId), store.checkpointStates(runId, ROOT_ACTOR_ID)]);
    const statesAt = new Map(states.map((c) => [c.seq, c.states]));
    const checkpoints = marks.map((m) => ({ ...m, states: Object.fromEntries(Object.entries(statesAt.get(m.seq) ?? {}).map(([a, st]) => [clean(a), clean(st)])) }));
    send(session.ws, { type: 'checkpoints', runId, checkpoints });
  };

  const unsubscribe = node?.subscribe(onEvent);
  const server = await startInspectorServer({
    host,
    port,
    maxPayload: 4 * 1024,
    page: inspectorPage,
    token: actionToken,
    onAction: async (body) => {
      const answer = await actionOf(body, actions);
      // A decision changes what the run waits for: every page watching a run is told.
      if (answer.status === 200) {
        announceRuns();
        for (const runId of new Set([...sessions].flatMap((s) => s.runId ?? []))) void sendApprovals(runId).catch(() => {});
      }
      return answer;
    },
    onConnection(ws) {
      const session: Session = { ws, runId: undefined, token: 0, loading: false };
      sessions.add(session);
      ws.on('close', () => sessions.delete(session));
      ws.on('error', () => {});
      ws.on('message', (data, isBinary) => handle(session, data, isBinary));
      send(ws, { type: 'hello', version: 1, follows: node !== undefined, previewChars: PREVIEW_CHARS });
      void sendRuns([session]).catch(() => {});
    },
  }).catch((error: unknown) => {
    unsubscribe?.();
    throw error;
  });

  schedule();

  let closing: Promise<void> | undefined;
  const inspector: Inspector = {
    url: server.url,
    get status() {
      return status;
    },
    get clients() {
      return server.sockets.size;
    },
    token: actionToken,
    close() {
      closing ??= (async () => {
        status = 'closing';
        unsubscribe?.();
        clearTimeout(runsTimer);
        clearTimeout(pollTimer);
        await server.close();
        sessions.clear();
        feeds.clear();
        status = 'closed';
      })();
      return closing;
    },
    [Symbol.asyncDispose]() {
      return inspector.close();
    },
  };
  return inspector;
}

/** The node's own decision and fork paths, as `troupe approve`, `reject` and `fork` call them. */
function nodeActions(node: TroupeNode, store: RunStore, definitions: ReadonlyMap<string, RunnableDefinition>): InspectorActions {
  return {
    approve: (approvalId, options) => node.approve(approvalId, options),
    reject: (approvalId, reason) => node.reject(approvalId, reason),
    async fork(runId, at) {
      const source = await store.requireRun(runId);
      const definition = definitions.get(source.crew);
      const run = await node.fork(runId, { at, ...(definition ? { definition } : {}) });
      return { runId: run.id };
    },
  };
}
