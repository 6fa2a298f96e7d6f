import { z } from 'zod';
import { NAME } from './ids.js';
import type { ToolSpec } from './model.js';
import { assertScope } from './policy.js';

/**
 * How a tool's side effect behaves when it must be retried after a crash:
 * - `read`: no side effect, safe to run again;
 * - `idempotent`: side effect keyed by the idempotency key, safe to run again with it;
 * - `compensatable`: has an undo (`compensate`) that runs before a retry;
 * - `irreversible`: must never run twice; an interrupted call is parked for a human.
 */
export type ToolEffect = 'read' | 'idempotent' | 'compensatable' | 'irreversible';

/** What a running tool is given besides its arguments. */
export interface ToolContext {
  /** Aborted when the run stops; long-running tools must honour it. */
  signal: AbortSignal;
  /** Stable id of this call: the same across a crash and its resume. */
  callId: string;
  /** Pass this to downstream APIs that deduplicate (payments, e-mail); equal across re-runs. */
  idempotencyKey: string;
  runId: string;
  agentId: string;
  /** The crew's shared blackboard, when it has one. */
  blackboard?: BlackboardAccess;
  /**
   * The secrets the tool declared, resolved by name at call time. They are never persisted:
   * anything the runtime writes (journal, ledger, snapshots, audit) is scrubbed of them.
   */
  secrets: Readonly<Record<string, string>>;
}

/** Read/write access to a crew's blackboard from inside a tool. */
export interface BlackboardAccess {
  /** Current values by key. */
  read(): Record<string, unknown>;
  write(key: string, value: unknown): void;
}

/** Options of {@link tool}. */
export interface ToolOptions<S extends z.ZodType, R> {
  name: string;
  description: string;
  /** zod schema of the arguments; the model sees its JSON Schema, calls are validated against it. */
  input: S;
  effect: ToolEffect;
  /** Permission scopes the tool needs (`fs:read`, `net`); checked against the agent's policy. */
  scopes?: readonly string[];
  /** Names of secrets the tool needs, resolved from the node's secrets provider per call. */
  secrets?: readonly string[];
  /**
   * `'ask'`: every call waits for a human's approval, whatever the agent's policy (an agent
   * without a policy is otherwise unrestricted). For tools whose side effects nobody vetted.
   */
  approval?: 'ask';
  run(args: z.infer<S>, context: ToolContext): Promise<R> | R;
  /** Undoes a call whose outcome is unknown; required when `effect` is `compensatable`. */
  compensate?(args: z.infer<S>, context: ToolContext): Promise<void> | void;
}

/** A tool an agent may call. Create with {@link tool}. */
export interface Tool<S extends z.ZodType = z.ZodType, R = unknown> {
  readonly kind: 'tool';
  readonly name: string;
  readonly description: string;
  readonly input: S;
  readonly effect: ToolEffect;
  readonly scopes: readonly string[];
  readonly secrets: readonly string[];
  /** `'ask'` when every call needs a human's approval (see {@link ToolOptions.approval}). */
  readonly approval?: 'ask';
  readonly spec: ToolSpec;
  run(args: z.infer<S>, context: ToolContext): Promise<R> | R;
  compensate?(args: z.infer<S>, context: ToolContext): Promise<void> | void;
}

const EFFECTS: readonly ToolEffect[] = ['read', 'idempotent', 'compensatable', 'irreversible'];

/** Defines a tool. Throws a `TypeError` when the definition breaks a rule. */
export function tool<S extends z.ZodType, R>(options: ToolOptions<S, R>): Tool<S, R> {
  if (!NAME.test(options.name)) {
    throw new TypeError(`tool name "${options.name}" must match ${NAME} (providers reject other names)`);
  }
  if (!EFFECTS.includes(options.effect)) {
    throw new TypeError(`tool "${options.name}": effect must be one of ${EFFECTS.join(', ')}`);
  }
  if (options.effect === 'compensatable' && typeof options.compensate !== 'function') {
    throw new TypeError(`tool "${options.name}" is compensatable and must define compensate()`);
  }
  for (const scope of options.scopes ?? []) assertScope(scope);
  if (options.approval !== undefined && options.approval !== 'ask') throw new TypeError(`tool "${options.name}": approval must be 'ask' or absent`);
  const inputSchema = z.toJSONSchema(options.input, { unrepresentable: 'any' }) as Record<string, unknown>;
  delete inputSchema.$schema;
  return {
    kind: 'tool',
    name: options.name,
    description: options.description,
    input: options.input,
    effect: options.effect,
    scopes: [...(options.scopes ?? [])],
    secrets: [...(options.secrets ?? [])],
    ...(options.approval ? { approval: options.approval } : {}),
    spec: { name: options.name, description: options.description, inputSchema },
    run: options.run,
    ...(options.compensate ? { compensate: options.compensate } : {}),
  };
}
