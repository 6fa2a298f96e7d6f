import { styleText } from 'node:util';
import { systemClock, type Clock } from '../core/clock.js';
import type { RunEvent } from '../core/events.js';
import { countEvent, createTotals, totalsPieces, type RunTotals } from './run-totals.js';
import { stateWords } from './state-words.js';

type Style = Parameters<typeof styleText>[0];

/** Options of {@link createProgressPrinter}. */
export interface ProgressOptions {
  /** Default: on when the stream is a terminal and `NO_COLOR` is not set. */
  color?: boolean;
  /** Time for a run's elapsed total (from its first event). Default the wall clock. */
  clock?: Clock;
}

/**
 * Formats run events as one line each, coloured when the stream is a terminal. Nothing
 * ticks: a call's duration is printed when it ends, and a run's totals when it ends. Lines
 * are not cut to the terminal: this output is for logs and pipes, where every word counts.
 */
export function createProgressPrinter(stream: NodeJS.WriteStream, options: ProgressOptions = {}) {
  const color = options.color ?? (stream.isTTY === true && !process.env.NO_COLOR);
  const clock = options.clock ?? systemClock;
  const paint = (style: Style, text: string) => (color ? styleText(style, text) : text);
  const pad = (actor: string) => paint('cyan', actor.padEnd(12));
  const line = (text: string) => stream.write(`${text}\n`);
  // Per run: a node prints the events of every run it hosts.
  const runs = new Map<string, { started: number; totals: RunTotals }>();
  const totalsOf = (runId: string) => {
    let run = runs.get(runId);
    if (!run) runs.set(runId, (run = { started: clock.now(), totals: createTotals() }));
    return run;
  };
  const printTotals = (runId: string) => {
    const run = totalsOf(runId);
    runs.delete(runId);
    line(paint('gray', `  totals  ${totalsPieces(run.totals, clock.now() - run.started).join(' · ')}`));
  };

  return (event: RunEvent): void => {
    countEvent(totalsOf(event.runId).totals, event);
    switch (event.type) {
      case 'run.started':
        line(`run ${event.runId}`);
        line(paint('gray', `  crew ${event.crew}`));
        break;
      case 'run.resumed':
        line(`run ${event.runId}`);
        line(paint('yellow', `  resumed from checkpoint ${event.checkpoint}`));
        break;
      case 'state':
        line(`  ${pad(event.actor)} ${paint('bold', stateWords(event.state))}`);
        break;
      case 'model.call':
        line(`  ${pad(event.actor)} model ${event.model} ${event.usage.inputTokens}→${event.usage.outputTokens} tok ${event.replayed ? paint('gray', 'replayed from journal') : `${event.ms} ms`}`);
        break;
      case 'model.error':
        line(`  ${pad(event.actor)} ${paint('red', `model error: ${event.error.message}`)}`);
        break;
      case 'tool.call':
        line(`  ${pad(event.actor)} tool ${event.tool} ${event.ok ? paint('green', 'ok') : paint('red', 'error')}${event.replayed ? paint('gray', ' (replayed)') : ''}`);
        break;
      case 'message':
        line(`  ${pad(event.from.split('/').pop()!)} → ${event.to.split('/').pop()} ${paint('gray', event.messageType)}`);
        break;
      case 'run.completed':
      case 'run.failed':
        printTotals(event.runId);
        break;
      default:
        break;
    }
  };
}
