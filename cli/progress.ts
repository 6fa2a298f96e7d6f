import { styleText } from 'node:util';
import type { RunEvent } from '../core/events.js';

type Style = Parameters<typeof styleText>[0];

/** Formats run events as one line each, coloured when the stream is a terminal. */
export function createProgressPrinter(stream: NodeJS.WriteStream, options: { color?: boolean } = {}) {
  const color = options.color ?? (stream.isTTY === true && !process.env.NO_COLOR);
  const paint = (style: Style, text: string) => (color ? styleText(style, text) : text);
  const pad = (actor: string) => paint('cyan', actor.padEnd(12));
  const line = (text: string) => stream.write(`${text}\n`);

  return (event: RunEvent): void => {
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
        line(`  ${pad(event.actor)} ${paint('bold', event.state)}`);
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
      default:
        break;
    }
  };
}
