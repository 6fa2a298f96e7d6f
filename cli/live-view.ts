import { createLogUpdate } from 'log-update';
import { backgroundTimer, systemClock, type Clock } from '../core/clock.js';
import type { RunEvent } from '../core/events.js';
import { fitLine, fixed, oneLine, packLine, type Segment, type Style } from './fit-line.js';
import { countEvent, count, createTotals, duration, totalsPieces, type RunTotals } from './run-totals.js';
import { isBusy, stateWords } from './state-words.js';

/** What the live view knows about one actor. */
interface ActorLine {
  /** The machine state, as events name it (shown in words). */
  state: string;
  /** When it entered `state`, on the view's clock. */
  since: number;
  last: string;
  lastStyle: Style | null;
  modelCalls: number;
  tokens: number;
  tools: number;
}

/** How the run stands, as far as the view has seen. */
export type LiveStatus = 'starting' | 'running' | 'waiting' | 'completed' | 'failed' | 'stopped';

/** The state of the live view, folded from run events. */
export interface LiveState {
  runId: string;
  crew: string;
  status: LiveStatus;
  /** When the view started, on its clock: elapsed time counts from here. */
  startedAt: number;
  /** When the run ended (or the view stopped), so the final elapsed time stays put. */
  endedAt: number | null;
  actors: Map<string, ActorLine>;
  messages: string[];
  checkpoints: number;
  note: string;
  totals: RunTotals;
}

/** A fresh view state; `crew` and `runId` when they are known before the first event. */
export function createLiveState(start: { now: number; crew?: string; runId?: string }): LiveState {
  return {
    runId: start.runId ?? '',
    crew: start.crew ?? '',
    status: 'starting',
    startedAt: start.now,
    endedAt: null,
    actors: new Map(),
    messages: [],
    checkpoints: 0,
    note: '',
    totals: createTotals(),
  };
}

const actor = (s: LiveState, id: string, now: number): ActorLine => {
  let line = s.actors.get(id);
  if (!line) s.actors.set(id, (line = { state: '', since: now, last: '', lastStyle: null, modelCalls: 0, tokens: 0, tools: 0 }));
  return line;
};

const lastOf = (address: string) => address.split('/').pop() ?? address;

/** Folds one event, seen at `now` (the view's clock), into the view state. Pure but for mutating `s`. */
export function foldEvent(s: LiveState, event: RunEvent, now: number): void {
  countEvent(s.totals, event);
  switch (event.type) {
    case 'run.started':
    case 'run.resumed':
      s.runId = event.runId;
      s.crew = event.crew;
      s.status = 'running';
      if (event.type === 'run.resumed') s.note = `resumed from checkpoint ${event.checkpoint}`;
      break;
    case 'state': {
      const a = actor(s, event.actor, now);
      if (a.state !== event.state) a.since = now;
      a.state = event.state;
      break;
    }
    case 'model.call': {
      const a = actor(s, event.actor, now);
      a.modelCalls += 1;
      a.tokens += event.usage.inputTokens + event.usage.outputTokens;
      a.last = `model ${event.model} · ${event.replayed ? 'replayed' : duration(event.ms)}`;
      a.lastStyle = null;
      break;
    }
    case 'model.error': {
      const a = actor(s, event.actor, now);
      a.last = `model error${event.ms !== undefined ? ` after ${duration(event.ms)}` : ''}: ${event.error.message}`;
      a.lastStyle = 'red';
      break;
    }
    case 'model.token': {
      const a = actor(s, event.actor, now);
      // The tail of what streams in, so the newest words stay visible.
      a.last = `… ${oneLine(`${a.last.startsWith('… ') ? a.last.slice(2) : ''}${event.text}`).slice(-120)}`;
      a.lastStyle = 'gray';
      break;
    }
    case 'tool.call': {
      const a = actor(s, event.actor, now);
      a.tools += 1;
      a.last = `tool ${event.tool} ${event.ok ? 'ok' : 'error'}${event.replayed ? ' (replayed)' : ` · ${duration(event.ms)}`}`;
      a.lastStyle = event.ok ? null : 'red';
      break;
    }
    case 'message':
      s.messages.push(`${lastOf(event.from)} → ${lastOf(event.to)}  ${event.messageType}`);
      if (s.messages.length > 6) s.messages.shift();
      break;
    case 'approval.requested':
      s.status = 'waiting';
      s.note = `waiting for approval ${event.approvalId} (${event.tool})`;
      break;
    case 'approval.decided':
      s.status = 'running';
      s.note = '';
      break;
    case 'checkpoint':
      s.checkpoints = event.seq;
      break;
    case 'run.completed':
      s.status = 'completed';
      s.endedAt ??= now;
      break;
    case 'run.failed':
      s.status = 'failed';
      s.endedAt ??= now;
      s.note = `failed: ${event.error.message}`;
      break;
    default:
      break;
  }
}

const STATE_STYLE: Record<string, Style> = {
  planning: 'cyan',
  acting: 'yellow',
  delegating: 'magenta',
  recovering: 'red',
  awaitingApproval: 'red',
  done: 'green',
  failed: 'red',
};

const STATUS_WORDS: Record<LiveStatus, string> = {
  starting: 'starting…',
  running: 'running',
  waiting: 'waiting for a human',
  completed: 'completed',
  failed: 'failed',
  stopped: 'stopped',
};

/** How {@link renderLive} draws. */
export interface RenderOptions {
  /** The view's clock now: busy actors show how long they have been at it. */
  now: number;
  /** Columns to fit; every line is at most this wide. Default 80. */
  width?: number;
  color?: boolean;
  /** Adds the run's totals (the last frame). */
  totals?: boolean;
}

/** Columns of the actor id; longer ids are cut so the columns after it stay aligned. */
const ID_WIDTH = 14;
const STATE_WIDTH = 31;

/** Renders the view as text: never wider than `width`, colours only when `color`. */
export function renderLive(s: LiveState, options: RenderOptions): string {
  const width = options.width ?? 80;
  const color = options.color ?? false;
  const line = (...segments: Segment[]) => fitLine(segments, width, color);
  const elapsed = (s.endedAt ?? options.now) - s.startedAt;
  const header: Segment[] = [
    ['bold', s.runId ? `run ${oneLine(s.runId)}` : 'troupe run'],
    ['gray', `${s.crew ? ` · crew ${oneLine(s.crew)}` : ''} · ${STATUS_WORDS[s.status]} · ${duration(elapsed)}${s.checkpoints ? ` · checkpoint ${s.checkpoints}` : ''}`],
  ];
  const rows: string[] = [];
  for (const [id, a] of s.actors) {
    const busy = isBusy(a.state) && s.endedAt === null;
    const label = `${stateWords(a.state)}${busy ? ` ${duration(options.now - a.since)}` : ''}`;
    // The crew's root and idle agents call nothing: a row of zeros would only be noise.
    const stats = a.modelCalls || a.tools ? `${a.modelCalls} model · ${a.tools} tool${a.tools === 1 ? '' : 's'} · ${count(a.tokens)} tok` : '';
    rows.push(line([null, '  '], ['bold', fixed(oneLine(id), ID_WIDTH)], [null, ' '], [STATE_STYLE[a.state] ?? null, stats ? fixed(label, STATE_WIDTH) : label], ['gray', stats ? ` ${stats}` : '']));
    if (a.last) rows.push(line([null, `  ${' '.repeat(ID_WIDTH)} `], [a.lastStyle, oneLine(a.last)]));
  }
  const frame = [line(...header)];
  if (s.note) frame.push(line([s.status === 'failed' ? 'red' : 'yellow', oneLine(s.note)]));
  frame.push('', ...rows);
  if (s.messages.length) frame.push('', line(['gray', '  messages']), ...s.messages.map((m) => line([null, `    ${oneLine(m)}`])));
  if (options.totals) {
    const packed = packLine(totalsPieces(s.totals, elapsed), width, '          ', '  totals  ');
    frame.push('', ...packed.map((l) => line([null, l])));
  }
  return frame.join('\n');
}

/** Where frames go: an in-place region of a terminal by default. */
export interface FrameSink {
  draw(frame: string): void;
  /** Leaves the last frame on screen. */
  done(): void;
}

/** Options of {@link createLiveView}. */
export interface LiveViewOptions {
  /** The crew, shown before the first event arrives. */
  crew?: string;
  /** The run id when it is known before the run starts (`--run-id`, `resume`). */
  runId?: string;
  /** Time for elapsed and busy times and for the redraw timer. Default the wall clock. */
  clock?: Clock;
  /** Default: on unless `NO_COLOR` is set. */
  color?: boolean;
  /** How often the view redraws, so busy times tick. Default 100 ms. */
  tickMs?: number;
  /** Default: `log-update` on the stream. */
  frames?: FrameSink;
}

/** A running live view. */
export interface LiveView {
  /** Give it every event of the run. */
  listener(event: RunEvent): void;
  /** Draws the last frame, with the run's totals, and stops redrawing. Idempotent. */
  stop(): void;
}

/**
 * A live, in-place terminal view of a run: the run and crew at once, then each agent's state
 * in words with how long it has been busy (a model call in flight ticks), its latest call,
 * recent messages and, at the end, the run's totals. Every line fits the terminal, and never
 * more than 80 columns.
 */
export function createLiveView(stream: NodeJS.WriteStream = process.stdout, options: LiveViewOptions = {}): LiveView {
  const clock = options.clock ?? systemClock;
  const state = createLiveState({ now: clock.now(), ...(options.crew ? { crew: options.crew } : {}), ...(options.runId ? { runId: options.runId } : {}) });
  const frames = options.frames ?? logUpdateFrames(stream);
  const color = options.color ?? !process.env.NO_COLOR;
  const tickMs = options.tickMs ?? 100;
  const width = () => Math.min(stream.columns || 80, 80);
  const draw = (totals = false) => frames.draw(renderLive(state, { now: clock.now(), width: width(), color, totals }));
  let cancel: (() => void) | undefined;
  let stopped = false;
  const tick = () => {
    draw();
    // A background timer: the view never keeps the process alive on its own.
    cancel = backgroundTimer(clock, tick, tickMs);
  };
  // Something shows at once, before the node has opened anything or the run has said a word.
  tick();
  return {
    listener: (event) => {
      if (!stopped) foldEvent(state, event, clock.now());
    },
    stop() {
      if (stopped) return;
      stopped = true;
      cancel?.();
      state.endedAt ??= clock.now();
      if (state.status === 'running' || state.status === 'starting') state.status = 'stopped';
      draw(true);
      frames.done();
    },
  };
}

function logUpdateFrames(stream: NodeJS.WriteStream): FrameSink {
  const update = createLogUpdate(stream);
  return { draw: (frame) => update(frame), done: () => update.done() };
}
