/**
 * Model providers: the offline scripted model, real HTTP providers (OpenAI-compatible and
 * Anthropic) and the router that puts fallback, deprecations and circuit breakers in front
 * of them.
 * @module
 */
export { scriptedModel, type ScriptedModelOptions, type ScriptedTurn, type ScriptedCall, type Script } from './scripted.js';
export { openAICompatible, toOpenAIMessages, toOpenAITools, toOpenAISettings, type OpenAICompatibleOptions } from './openai.js';
export { anthropic, toAnthropicMessages, toAnthropicTools, toAnthropicSettings, type AnthropicOptions } from './anthropic.js';
export { createRouter, type RouterOptions, type RouteSpec, type Deprecation, type BreakerOptions, type BreakerState, type ModelRouter, type RouteAttempt } from './router.js';
export { parseRetryAfter, readSse, type ApiKeySource, type FetchLike, type ModelPrice, type SseEvent, type TokenListener } from './http.js';
