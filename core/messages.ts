import { z } from 'zod';

/**
 * The provider-neutral conversation format. Conversations are persisted in this shape,
 * never in a vendor's, so a run can move to another provider (fallback, deprecation)
 * without rewriting its history.
 */

/**
 * A request by the model to call one tool. `id` is unique within the assistant message.
 * When the model's arguments could not be read as a JSON object, `argsError` says why and
 * `args` keeps the raw text: the call still happens, as an error the model gets back to
 * correct (small models often send broken JSON), instead of failing the agent.
 */
export const ToolCallSchema = z.strictObject({
  id: z.string().min(1).max(128),
  name: z.string().min(1).max(128),
  args: z.unknown(),
  argsError: z.string().max(1_000).optional(),
});
/** A tool call in provider-neutral form (see {@link ToolCallSchema}). */
export type ToolCall = z.infer<typeof ToolCallSchema>;

/**
 * Reads a model's tool-call arguments the same way for every provider: a JSON object, or
 * the text of one (empty text meaning no arguments). Anything else is kept as it came, with
 * `argsError` saying what is wrong, for the tool executor to hand back to the model.
 */
export function parseToolArgs(raw: unknown): Pick<ToolCall, 'args' | 'argsError'> {
  if (typeof raw !== 'string') return checkToolArgs(raw);
  if (raw.trim() === '') return { args: {} };
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (error) {
    return { args: raw, argsError: `not valid JSON (${error instanceof Error ? error.message : String(error)})` };
  }
  const checked = checkToolArgs(value);
  // Keep the text the model wrote, not our re-encoding of it, when it is wrong.
  return checked.argsError === undefined ? checked : { args: raw, argsError: checked.argsError };
}

/** Like {@link parseToolArgs}, for arguments a provider already decoded (Anthropic's `input`). */
export function checkToolArgs(value: unknown): Pick<ToolCall, 'args' | 'argsError'> {
  if (value === undefined) return { args: {} };
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    const kind = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
    return { args: value, argsError: `must be a JSON object, got ${kind}` };
  }
  return { args: value };
}

/** A short quoted view of arguments as the model sent them, for error messages. */
export function argsPreview(args: unknown, max = 200): string {
  const text = typeof args === 'string' ? args : (JSON.stringify(args) ?? String(args));
  return JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text);
}

/** The zod schema of a {@link Message}. */
export const MessageSchema = z.discriminatedUnion('role', [
  z.strictObject({ role: z.literal('system'), content: z.string() }),
  z.strictObject({ role: z.literal('user'), content: z.string(), name: z.string().optional() }),
  z.strictObject({ role: z.literal('assistant'), content: z.string(), toolCalls: z.array(ToolCallSchema).optional() }),
  z.strictObject({
    role: z.literal('tool'),
    toolCallId: z.string(),
    name: z.string(),
    content: z.string(),
    isError: z.boolean().optional(),
  }),
]);

/** One message of a conversation: system, user, assistant (maybe with tool calls) or tool result. */
export type Message = z.infer<typeof MessageSchema>;
/** An assistant turn. */
export type AssistantMessage = Extract<Message, { role: 'assistant' }>;
/** The result of one tool call, fed back to the model. */
export type ToolMessage = Extract<Message, { role: 'tool' }>;

/** Builders that keep call sites short and typed. */
export const msg = {
  system: (content: string): Message => ({ role: 'system', content }),
  user: (content: string, name?: string): Message => (name ? { role: 'user', content, name } : { role: 'user', content }),
  assistant: (content: string, toolCalls?: ToolCall[]): AssistantMessage =>
    toolCalls?.length ? { role: 'assistant', content, toolCalls } : { role: 'assistant', content },
  tool: (toolCallId: string, name: string, content: string, isError = false): ToolMessage =>
    isError ? { role: 'tool', toolCallId, name, content, isError } : { role: 'tool', toolCallId, name, content },
};

/**
 * What makes `value` not JSON (`"a function"`, `"a symbol at .to[0]"`, `"a cyclic
 * structure at .self"`), or `undefined` when `JSON.stringify` renders it faithfully.
 * `JSON.stringify` would silently drop or null such parts, or throw on bigints and cycles.
 */
export function describeNonJson(value: unknown): string | undefined {
  const path: string[] = [];
  const open = new Set<object>();
  const at = () => (path.length ? ` at ${path.join('')}` : '');
  const walk = (v: unknown): string | undefined => {
    if (typeof v === 'function') return `a function${at()}`;
    if (typeof v === 'symbol') return `a symbol${at()}`;
    if (typeof v === 'bigint') return `a bigint${at()}`;
    if (v === null || typeof v !== 'object') return undefined;
    if (typeof (v as { toJSON?: unknown }).toJSON === 'function') return undefined;
    if (open.has(v)) return `a cyclic structure${at()}`;
    open.add(v);
    try {
      const entries: Array<[string, unknown]> = Array.isArray(v) ? v.map((item, i) => [`[${i}]`, item]) : Object.entries(v).map(([k, item]) => [`.${k}`, item]);
      for (const [step, item] of entries) {
        path.push(step);
        const found = walk(item);
        path.pop();
        if (found) return found;
      }
      return undefined;
    } finally {
      open.delete(v);
    }
  };
  return walk(value);
}

/** Renders any tool output as the text a model reads. */
export function toolContent(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value === undefined) return '';
  return JSON.stringify(value);
}
