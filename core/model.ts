import type { AssistantMessage, Message } from './messages.js';
import { ErrorCode, TroupeError } from './errors.js';

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
}

/** Providers available to a node, keyed by id. */
export type ModelProviders = Readonly<Record<string, ModelProvider>>;

/**
 * Resolves a model reference `provider:model` (or just `provider`, meaning its `default`
 * model) against the registered providers.
 */
export function resolveModel(providers: ModelProviders, ref: string): { provider: ModelProvider; model: string } {
  const cut = ref.indexOf(':');
  const providerId = cut === -1 ? ref : ref.slice(0, cut);
  const model = cut === -1 ? 'default' : ref.slice(cut + 1);
  const provider = providers[providerId];
  if (!provider) {
    throw new TroupeError(ErrorCode.MODEL_NOT_FOUND, `no model provider "${providerId}" (from "${ref}"); registered: ${Object.keys(providers).join(', ') || 'none'}`, {
      details: { ref, provider: providerId },
    });
  }
  return { provider, model };
}
