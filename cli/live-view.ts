import { createLogUpdate } from 'log-update';
import { styleText } from 'node:util';
import type { RunEvent } from '../core/events.js';

/** What the live view knows about one actor. */
interface ActorLine {
  state: string;
  last: string;
  modelCalls: number;
  tokens: number;
  tools: number;
}

/** The state of the live view, folded from run events. */
export interface LiveState {
  runId: string;
  crew: string;
  actors: Map<string, ActorLine>;
  messages: string[];
  checkpoints: number;
  note: string;
}

/** A fresh view state. */
export function createLiveState(): LiveState {
  return { runId: '', crew: '', actors: new Map(), messages: [], checkpoints: 0, note: '' };
}

const actor = (s: LiveState, id: string): ActorLine => {
  let line = s.actors.get(id);
  if (!line) s.actors.set(id, (line = { state: '', last: '', modelCalls: 0, tokens: 0, tools: 0 }));
  return line;
};

/** Folds one event into the view state. Pure but for mutating `s`. */
export function foldEvent(s: LiveState, event: RunEvent): void {
  switch (event.type) {
    case 'run.started':
    case 'run.resumed':
      s.runId = event.runId;
      s.crew = event.crew;
      if (event.type === 'run.resumed') s.note = `resumed from checkpoint ${event.checkpoint}`;
      break;
    case 'state':
      actor(s, event.actor).state = event.state;
      break;
    case 'model.call': {
      const a = actor(s, event.actor);
      a.modelCalls += 1;
      a.tokens += event.usage.inputTokens + event.usage.outputTokens;
      a.last = `model ${event.model}${event.replayed ? ' (replayed)' : ''}`;
      break;
    }
    case 'model.token':
      actor(s, event.actor).last = `… ${event.text.replace(/\s+/g, ' ').slice(-40)}`;
      break;
    case 'tool.call': {
      const a = actor(s, event.actor);
      a.tools += 1;
      a.last = `tool ${event.tool} ${event.ok ? 'ok' : 'error'}`;
      break;
    }
    case 'message':
      s.messages.push(`${event.from.split('/').pop()} → ${event.to.split('/').pop()}  ${event.messageType}`);
      if (s.messages.length > 6) s.messages.shift();
      break;
    case 'approval.requested':
      s.note = `waiting for approval ${event.approvalId} (${event.tool})`;
      break;
    case 'checkpoint':
      s.checkpoints = event.seq;
      break;
    default:
      break;
  }
}

const STATE_STYLE: Record<string, Parameters<typeof styleText>[0]> = {
  planning: 'cyan',
  acting: 'yellow',
  delegating: 'magenta',
  recovering: 'red',
  awaitingApproval: 'red',
  done: 'green',
  failed: 'red',
};

/** Renders the view as text (colours only when `color`). */
export function renderLive(s: LiveState, color: boolean): string {
  const paint = (style: Parameters<typeof styleText>[0], text: string) => (color ? styleText(style, text) : text);
  const rows = [...s.actors.entries()].map(([id, a]) => {
    const state = a.state.padEnd(16);
    const stats = `${a.modelCalls} model · ${a.tools} tools · ${a.tokens} tok`;
    return `  ${paint('bold', id.padEnd(12))} ${paint(STATE_STYLE[a.state] ?? 'white', state)} ${stats.padEnd(32)} ${paint('gray', a.last)}`;
  });
  return [
    `${paint('bold', `run ${s.runId}`)}  ${paint('gray', `crew ${s.crew} · checkpoint ${s.checkpoints}`)}${s.note ? `  ${paint('yellow', s.note)}` : ''}`,
    '',
    ...rows,
    '',
    paint('gray', '  messages'),
    ...s.messages.map((m) => `    ${m}`),
  ].join('\n');
}

/**
 * A live, in-place terminal view of a run (agents, their states and recent messages),
 * redrawn at most every 50 ms. Call `stop()` to leave the final frame on screen.
 */
export function createLiveView(stream: NodeJS.WriteStream = process.stdout) {
  const state = createLiveState();
  const draw = createLogUpdate(stream);
  const color = !process.env.NO_COLOR;
  let timer: NodeJS.Timeout | undefined;
  const schedule = () => {
    timer ??= setTimeout(() => {
      timer = undefined;
      draw(renderLive(state, color));
    }, 50);
  };
  return {
    listener: (event: RunEvent) => {
      foldEvent(state, event);
      schedule();
    },
    stop() {
      clearTimeout(timer);
      timer = undefined;
      draw(renderLive(state, color));
      draw.done();
    },
  };
}
