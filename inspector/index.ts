/**
 * The inspector: a local web page that follows every agent's state machine live and replays
 * finished runs from their journal. `createInspector` ties a node's events and a storage's
 * journal to the page (`page.ts`) over a WebSocket (`server.ts`); `graph.ts` turns machines
 * into the diagrams the page draws.
 * @module
 */
import type { WebSocket } from 'ws';
import { z } from 'zod';
import type { RunEvent } from '../core/events.js';
import { ROOT_ACTOR_ID, type TroupeNode } from '../core/node.js';
import { createRunStore, type JournalEntry, type RunRecord } from '../core/run-store.js';
import type { RunnableDefinition } from '../core/runtime.js';
import type { Storage } from '../core/storage.js';
import { defaultGraphs, graphsOf, type MachineGraph } from './graph.js';
import { inspectorPage } from './page.js';
import { LOOPBACK_HOSTS, startInspectorServer, type LoopbackHost } from './server.js';

export { ANY_STATE, defaultGraphs, graphsOf, machineGraph, type GraphEdge, type GraphNode, type MachineGraph } from './graph.js';
export { LOOPBACK_HOSTS, WS_PATH, type LoopbackHost } from './server.js';

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
}

/** A running inspector. Create with {@link createInspector}. */
export interface Inspector extends AsyncDisposable {
  /** The page, e.g. `http://127.0.0.1:41234/`. */
  readonly url: string;
  readonly status: 'open' | 'closing' | 'closed';
  /** Pages (and other WebSocket clients) connected now. */
  readonly clients: number;
  /** Closes every connection and the listener; the node and storage stay open. Idempotent. */
  close(): Promise<void>;
}

/** One step of a run as the page shows it; the same shape whether live or replayed. */
export type TimelineEvent =
  | { kind: 'state'; ts: number; actor: string; state: string }
  | { kind: 'message'; ts: number; from: string; to: string; messageType: string }
  | { kind: 'call'; ts: number; actor: string; call: 'model' | 'tool'; name: string; ok: boolean }
  | { kind: 'run'; ts: number; status: 'started' | 'resumed' | 'completed' | 'failed'; detail: string };

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
}

/** Longest text (in characters) of any preview sent to the page. */
export const PREVIEW_CHARS = 200;
const MAX_TIMELINE = 20_000;
const MAX_RUNS = 200;
const MAX_BUFFERED = 4 * 1024 * 1024;
// Controls, zero-width and bidirectional-override characters: nothing a page should echo.
const UNPRINTABLE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;

/** Text safe to stream: control characters stripped, whitespace runs folded, at most `max` characters. */
export function clean(value: unknown, max = PREVIEW_CHARS): string {
  const text = typeof value === 'string' ? value : value === undefined || value === null ? '' : (JSON.stringify(value) ?? String(value));
  const chars = Array.from(text.replace(UNPRINTABLE, '').replace(/\s+/g, ' ').trim());
  return chars.length > max ? `${chars.slice(0, max).join('')}…` : chars.join('');
}

/** `runId/actor` → `actor`; addresses outside the run stay whole. */
const local = (address: unknown, runId: string) => clean(typeof address === 'string' && address.startsWith(`${runId}/`) ? address.slice(runId.length + 1) : address);

/** The page's view of a journal entry; entries it does not show give `undefined`. */
export function fromJournal(entry: JournalEntry, runId: string): TimelineEvent | undefined {
  const d = entry.data;
  const ts = entry.ts;
  switch (entry.kind) {
    case 'state':
      return { kind: 'state', ts, actor: clean(entry.actor), state: clean(d.state) };
    case 'message':
      // Dead letters are never announced live; leaving them out keeps both views identical.
      return d.deadLetter ? undefined : { kind: 'message', ts, from: local(entry.actor, runId), to: local(d.to, runId), messageType: clean(d.type) };
    case 'model.call':
      return { kind: 'call', ts, actor: clean(entry.actor), call: 'model', name: clean(d.model), ok: true };
    case 'tool.call':
      return { kind: 'call', ts, actor: clean(entry.actor), call: 'tool', name: clean(d.tool), ok: d.ok === true };
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
  const { runId } = event;
  switch (event.type) {
    case 'state':
      return { kind: 'state', ts, actor: clean(event.actor), state: clean(event.state) };
    case 'message':
      return { kind: 'message', ts, from: local(event.from, runId), to: local(event.to, runId), messageType: clean(event.messageType) };
    case 'model.call':
      return event.replayed ? undefined : { kind: 'call', ts, actor: clean(event.actor), call: 'model', name: clean(event.model), ok: true };
    case 'tool.call':
      return event.replayed ? undefined : { kind: 'call', ts, actor: clean(event.actor), call: 'tool', name: clean(event.tool), ok: event.ok };
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

const ClientMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('runs') }),
  z.object({ type: z.literal('select'), runId: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/) }),
  z.object({ type: z.literal('unselect') }),
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
  const graphCache = new Map<string, Record<string, MachineGraph>>();
  let status: Inspector['status'] = 'open';
  let runsTimer: NodeJS.Timeout | undefined;

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
  });
  const summaries = async (): Promise<RunSummary[]> =>
    (await store.listRuns())
      .sort((a, b) => b.startedAt - a.startedAt || b.id.localeCompare(a.id))
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

  const graphsFor = (crewId: string | undefined, timeline: readonly TimelineEvent[]): Record<string, MachineGraph> => {
    const def = crewId === undefined ? undefined : definitions.get(crewId);
    if (def) {
      if (!graphCache.has(def.id)) graphCache.set(def.id, graphsOf(def));
      return graphCache.get(def.id)!;
    }
    const defaults = defaultGraphs();
    const graphs: Record<string, MachineGraph> = { [ROOT_ACTOR_ID]: defaults.root };
    for (const e of timeline) if (e.kind === 'state' && e.actor !== ROOT_ACTOR_ID) graphs[e.actor] = defaults.agent;
    return graphs;
  };

  const select = async (session: Session, runId: string) => {
    const token = ++session.token;
    session.runId = runId;
    session.loading = true;
    try {
      const record = await store.getRun(runId);
      const feed = feeds.get(runId);
      if (!record && !feed) {
        session.runId = undefined;
        return send(session.ws, { type: 'error', message: `no run "${runId}" in ${clean(options.storage.location)}` });
      }
      let timeline = feed ? await feed.head : await readTimeline(runId);
      if (token !== session.token) return;
      // The tail is read after the await and before sending, so no live event falls between.
      if (feed) timeline = [...timeline, ...feed.tail];
      send(session.ws, { type: 'run', runId, run: record && summarize(record), live: node?.get(runId) !== undefined, graphs: graphsFor(record?.crew, timeline), timeline: timeline.slice(-MAX_TIMELINE) });
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
    } else if (event.type === 'checkpoint') {
      // Reads run one after another, so entries reach the page once and in order.
      const joined = feed;
      journal.reads = journal.reads
        .then(() => readJournal(runId, journal.seq))
        .then(({ last, timeline }) => {
          journal.seq = last;
          for (const item of timeline) publish(runId, joined, item);
        })
        .catch(() => {});
    }
    if (event.type.startsWith('run.') || event.type.startsWith('approval.')) announceRuns();
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
    if (!request.success) return send(session.ws, { type: 'error', message: 'bad request: expected {"type":"runs"|"select"|"unselect"}' });
    const r = request.data;
    if (r.type === 'unselect') return void (session.runId = undefined);
    const work = r.type === 'runs' ? sendRuns([session]) : select(session, r.runId);
    void work.catch((error: unknown) => send(session.ws, { type: 'error', message: clean((error as Error)?.message) }));
  };

  const unsubscribe = node?.subscribe(onEvent);
  const server = await startInspectorServer({
    host,
    port,
    maxPayload: 4 * 1024,
    page: inspectorPage,
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

  let closing: Promise<void> | undefined;
  const inspector: Inspector = {
    url: server.url,
    get status() {
      return status;
    },
    get clients() {
      return server.sockets.size;
    },
    close() {
      closing ??= (async () => {
        status = 'closing';
        unsubscribe?.();
        clearTimeout(runsTimer);
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
