import type { AssistantMessage, Message } from './messages.js';
import { ErrorCode, TroupeError } from './errors.js';
import type { ModelSettings } from './model-settings.js';

/** What a model is told about one tool: its name, purpose and JSON Schema of its input. */
export interface ToolSpec {
  name: string;
  description: string;
  inputSchema: Record<string, unknown>;
}

/** One model call in provider-neutral form. */
export interface ModelRequest {
  /** The model name within the provider (`gpt-4o`, `default`). */
  model: string;
  messages: readonly Message[];
  tools: readonly ToolSpec[];
  /** Who is asking; deterministic providers key their scripts on it. */
  agent: string;
  runId: string;
  step: number;
  /**
   * Why the agent is calling: `plan` for a normal step, `recover` for a retry after a
   * failure. Routers may send recovery to other models.
   */
  phase: 'plan' | 'recover';
  /** 0 for the first attempt of this step, then 1, 2, … */
  attempt: number;
  /**
   * Model answers this agent got in its earlier tasks of the run that completed (each
   * round of a group chat, each delegation is a task of its own). A failed attempt's
   * answers do not count, nor do those a crew reset undid, so a restart asks again what the
   * failed attempt asked. Added to the assistant messages of `messages`, it numbers this
   * call among the agent's turns in the run. It is part of the agent's checkpointed state,
   * so a resumed run sends the same number an uninterrupted one would. Absent (0) from
   * callers that have no tasks.
   */
  priorTurns?: number;
  /** The agent's call settings (temperature, token limit, …); absent when it set none. */
  settings?: ModelSettings;
}

/** Token counts of one call. */
export interface Usage {
  inputTokens: number;
  outputTokens: number;
}

/** A model's answer in provider-neutral form. */
export interface ModelResponse {
  message: AssistantMessage;
  usage: Usage;
  /** The model that actually served the call, when the provider reports it. */
  model?: string;
  finishReason?: 'stop' | 'tool_calls' | 'length' | 'error';
  /** Cost of the call in US dollars, when the provider knows its prices. */
  cost?: number;
  /**
   * Facts about how the call was served (route, fallbacks taken, deprecation switches);
   * recorded verbatim in the run's journal. Must be serialisable.
   */
  meta?: Record<string, unknown>;
}

/** Per-call context handed to a provider. */
export interface ModelCallContext {
  /** Aborted when the run stops or the agent leaves the calling state. */
  signal: AbortSignal;
  /** Streaming providers report text as it arrives; live progress only, never persisted. */
  onToken?: (text: string) => void;
}

/**
 * A model provider: one engine behind a small interface. The runtime decides which provider
 * serves a step; providers only turn a request into a response.
 */
export interface ModelProvider {
  /** Registry key, the part before `:` in a model reference (`scripted`, `openai`). */
  readonly id: string;
  generate(request: ModelRequest, context: ModelCallContext): Promise<ModelResponse>;
  /**
   * Says what is wrong with serving `model` (the part after `:`), or `undefined` when
   * nothing is known to be. Asked when a run starts or resumes, before anything is written,
   * so a reference that can never work fails the run at once instead of being retried.
   * Only checks that need no network belong here (a router's routes, a missing default).
   */
  check?(model: string): string | undefined;
}

/** Providers available to a node, keyed by id. */
export type ModelProviders = Readonly<Record<string, ModelProvider>>;

/** Splits a reference `provider:model`; a bare `provider` means its `default` model. */
export function splitModelRef(ref: string): { provider: string; model: string } {
  const cut = ref.indexOf(':');
  return cut === -1 ? { provider: ref, model: 'default' } : { provider: ref.slice(0, cut), model: ref.slice(cut + 1) };
}

/** One reference that cannot work, as {@link checkModelRefs} reports it. */
export interface ModelRefProblem {
  /** The actor (agent) whose reference it is. */
  agent: string;
  /** The reference as the agent wrote it (`router:writer`). */
  model: string;
  /** What is wrong with it, in words a person can act on. */
  problem: string;
}

/**
 * Every problem with `refs` (actor id → reference) against `providers`: a provider that is
 * not registered, or one whose `check` objects to the model. All of them, not the first, so
 * one failed start shows everything there is to fix.
 */
export function checkModelRefs(providers: ModelProviders, refs: Readonly<Record<string, string>>): ModelRefProblem[] {
  const problems: ModelRefProblem[] = [];
  for (const [agent, ref] of Object.entries(refs)) {
    const { provider: providerId, model } = splitModelRef(ref);
    const provider = providers[providerId];
    let problem: string | undefined;
    if (!provider) problem = `no model provider "${providerId}"; registered: ${Object.keys(providers).join(', ') || 'none'}`;
    else {
      try {
        problem = provider.check?.(model);
      } catch (error) {
        // A check that throws is a check that failed; its words are the problem.
        problem = error instanceof Error ? error.message : String(error);
      }
    }
    if (problem !== undefined) problems.push({ agent, model: ref, problem });
  }
  return problems;
}

/**
 * Resolves a model reference `provider:model` (or just `provider`, meaning its `default`
 * model) against the registered providers.
 */
export function resolveModel(providers: ModelProviders, ref: string): { provider: ModelProvider; model: string } {
  const { provider: providerId, model } = splitModelRef(ref);
  const provider = providers[providerId];
  if (!provider) {
    throw new TroupeError(ErrorCode.MODEL_NOT_FOUND, `no model provider "${providerId}" (from "${ref}"); registered: ${Object.keys(providers).join(', ') || 'none'}`, {
      details: { ref, provider: providerId },
    });
  }
  return { provider, model };
}
