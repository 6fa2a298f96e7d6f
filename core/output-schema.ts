import { z } from 'zod';
import { ErrorCode, TroupeError } from './errors.js';

/**
 * A typed final answer: an agent's or a crew's `output` schema, checked when it is defined.
 * Answers are JSON text end to end (conversations, result messages and the run record hold
 * text), so the schema must describe JSON: what `z.toJSONSchema` can render, no transforms,
 * dates or other values JSON cannot carry. That is also what lets the validated value be
 * written back as JSON and read again, after a restart, into the same value.
 */
export interface OutputContract<T = unknown> {
  readonly schema: z.ZodType<T>;
  /** The schema as JSON Schema: what the model is shown. */
  readonly jsonSchema: Record<string, unknown>;
  /** Reads an answer: the validated value and its JSON, or what is wrong with it, in words a model can act on. */
  check(text: string): { ok: true; value: T; json: string } | { ok: false; problem: string };
  /** Like `check`, throwing `OUTPUT_INVALID` when the answer does not fit. */
  read(text: string): T;
}

/** A ```json fence around the whole answer: models add one often enough to accept it. */
const FENCE = /^```(?:json)?\s*\n([\s\S]*?)\n?```$/;

/** What an issue path looks like in a message: `.items[0].title`, or `(the value)` at the top. */
const pathOf = (path: readonly PropertyKey[]) => (path.length ? path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('') : '(the value)');

/** Checks `schema` for `owner` (`agent "writer"`) and returns its contract; a `TypeError` states the rule it breaks. */
export function defineOutput<T>(owner: string, schema: z.ZodType<T>): OutputContract<T> {
  if (!(schema instanceof z.ZodType)) throw new TypeError(`${owner}: output must be a zod schema (z.object({ … }))`);
  let jsonSchema: Record<string, unknown>;
  try {
    // Rendering the output side refuses transforms: their values would not read back the same.
    z.toJSONSchema(schema, { io: 'output' });
    // What the model writes is the schema's input: a field with a default may be left out.
    jsonSchema = z.toJSONSchema(schema, { io: 'input' }) as Record<string, unknown>;
  } catch (error) {
    throw new TypeError(`${owner}: output must be a schema of JSON values (no transforms, dates, bigints or functions): ${(error as Error).message}`);
  }
  delete jsonSchema.$schema;
  const check: OutputContract<T>['check'] = (text) => {
    const trimmed = text.trim();
    const body = FENCE.exec(trimmed)?.[1] ?? trimmed;
    let raw: unknown;
    try {
      raw = JSON.parse(body);
    } catch (error) {
      return { ok: false, problem: `the answer is not JSON (${(error as Error).message})` };
    }
    const parsed = schema.safeParse(raw);
    if (!parsed.success) return { ok: false, problem: `the answer does not match the schema: ${parsed.error.issues.map((i) => `${pathOf(i.path)}: ${i.message}`).join('; ')}` };
    return { ok: true, value: parsed.data, json: JSON.stringify(parsed.data) };
  };
  return {
    schema,
    jsonSchema,
    check,
    read(text) {
      const result = check(text);
      if (!result.ok) throw new TroupeError(ErrorCode.OUTPUT_INVALID, `${owner}: ${result.problem}`, { details: { problem: result.problem }, retryable: false });
      return result.value;
    },
  };
}

/** What an agent with an output schema is told, after its instructions. */
export function outputInstructions(contract: OutputContract): string {
  return `Your final answer (the reply in which you call no tool) must be a single JSON value and nothing else, no prose around it, matching this JSON Schema:\n${JSON.stringify(contract.jsonSchema)}`;
}

/** The message that sends an invalid answer back to the model. */
export function outputCorrection(problem: string): string {
  return `Your answer was not accepted: ${problem}. Reply again with only the JSON value the schema describes.`;
}
