import type { RunEvent } from '../core/events.js';

/** What a run has used so far, as the CLI sums it from run events. */
export interface RunTotals {
  /** Steps answered: model calls that returned (replayed ones included). */
  steps: number;
  /** Model calls attempted: the steps plus the failed attempts. */
  modelCalls: number;
  failedModelCalls: number;
  toolCalls: number;
  inputTokens: number;
  outputTokens: number;
  /** US dollars; `null` until a provider reports a cost. */
  cost: number | null;
}

/** Totals of a run that has done nothing yet. */
export function createTotals(): RunTotals {
  return { steps: 0, modelCalls: 0, failedModelCalls: 0, toolCalls: 0, inputTokens: 0, outputTokens: 0, cost: null };
}

/** Adds what `event` used to `totals`. */
export function countEvent(totals: RunTotals, event: RunEvent): void {
  if (event.type === 'model.call') {
    totals.steps += 1;
    totals.modelCalls += 1;
    totals.inputTokens += event.usage.inputTokens;
    totals.outputTokens += event.usage.outputTokens;
    if (event.cost !== undefined) totals.cost = (totals.cost ?? 0) + event.cost;
  } else if (event.type === 'model.error') {
    totals.modelCalls += 1;
    totals.failedModelCalls += 1;
  } else if (event.type === 'tool.call') {
    totals.toolCalls += 1;
  }
}

/** `n` with thousands separated, so token counts read at a glance. */
export const count = (n: number) => n.toLocaleString('en-US');

/** A duration for people: `340 ms`, `4.2 s`, `2 min 05 s`, `1 h 02 min`. */
export function duration(ms: number): string {
  if (ms < 1_000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60_000) return `${(Math.floor(ms / 100) / 10).toFixed(1)} s`;
  const s = Math.floor(ms / 1_000);
  if (s < 3_600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3_600)} h ${String(Math.floor(s / 60) % 60).padStart(2, '0')} min`;
}

/** A cost in US dollars with the precision small amounts need. */
export const dollars = (cost: number) => `$${cost >= 1 ? cost.toFixed(2) : cost.toFixed(4)}`;

/** The totals as short pieces (`7 steps`, `9 model calls (2 failed)`, …) to lay out on lines. */
export function totalsPieces(totals: RunTotals, elapsedMs: number): string[] {
  const plural = (n: number, word: string) => `${count(n)} ${word}${n === 1 ? '' : 's'}`;
  return [
    plural(totals.steps, 'step'),
    `${plural(totals.modelCalls, 'model call')}${totals.failedModelCalls ? ` (${count(totals.failedModelCalls)} failed)` : ''}`,
    plural(totals.toolCalls, 'tool call'),
    `${plural(totals.inputTokens + totals.outputTokens, 'token')} (${count(totals.inputTokens)} in, ${count(totals.outputTokens)} out)`,
    ...(totals.cost !== null ? [dollars(totals.cost)] : []),
    `${duration(elapsedMs)} elapsed`,
  ];
}
