/**
 * The models the demo crews run on. Agents ask the router for their role (`router:<role>`);
 * the router maps every role to the crew's scripted model (offline, the default) or to the
 * real provider named by `TROUPE_MODEL` (`openai:gpt-4o-mini`, `anthropic:claude-…`; Ollama and
 * other OpenAI-compatible servers through `OPENAI_BASE_URL`).
 */
import { anthropic, createRouter, openAICompatible, type ModelProvider } from 'troupe';

/** The providers of a demo crew whose agents ask the router for `roles`. */
export function demoModels(scripted: ModelProvider, roles: readonly string[]) {
  const openai = openAICompatible({ baseURL: process.env.OPENAI_BASE_URL ?? 'https://api.openai.com/v1' });
  const claude = anthropic({});
  const target = process.env.TROUPE_MODEL ?? 'scripted:default';
  return {
    scripted,
    openai,
    anthropic: claude,
    router: createRouter({ providers: { scripted, openai, anthropic: claude }, routes: Object.fromEntries(roles.map((role) => [role, [target]])) }),
  };
}
