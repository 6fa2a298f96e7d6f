import type { ModelResponse } from '../model.js';
import { describeCall } from './divergence.js';

/** One side of a rehearsed step: what a model answered, what it cost. */
export interface RehearsalSide {
  /** The model that served (`provider:model`). */
  model: string;
  text: string;
  /** Tool calls it asked for, as `name({...})`. */
  toolCalls: string[];
  tokens: { input: number; output: number };
  /** US dollars, when the provider reports cost. */
  cost?: number;
}

/** A call of the rehearsed model: the recorded answer and the new model's, side by side. */
export interface RehearsalStep {
  agent: string;
  task: number;
  step: number;
  callId: string;
  /** Absent when the recording has no such call (the new model took the run elsewhere). */
  recorded: RehearsalSide | undefined;
  /** Absent when the replay stopped before the new model answered. */
  replayed?: RehearsalSide;
}

/** The side of a step that `response` is. */
export function rehearsalSide(response: ModelResponse, model: string): RehearsalSide {
  return {
    model,
    text: response.message.content,
    toolCalls: (response.message.toolCalls ?? []).map(describeCall),
    tokens: { input: response.usage.inputTokens, output: response.usage.outputTokens },
    ...(response.cost !== undefined ? { cost: response.cost } : {}),
  };
}
