import { z } from 'zod';

/**
 * Per-agent call settings, named as the AI SDK names its call settings so an agent written
 * for one provider reads the same for every other. Each provider maps them to its wire
 * format; a setting a provider has no field for is left out there (Anthropic has no `seed`).
 */
export interface ModelSettings {
  /** Sampling temperature (0 is the most deterministic). Providers cap it differently (Anthropic at 1, OpenAI at 2). */
  temperature?: number;
  /** Longest answer, in tokens. */
  maxOutputTokens?: number;
  /** Nucleus sampling: only the tokens of this much probability mass are considered (0–1). */
  topP?: number;
  /** Seed for providers that sample reproducibly with one. */
  seed?: number;
  /** Text at which the model stops generating. */
  stopSequences?: readonly string[];
  /**
   * Provider-specific fields by provider (`{ openai: { reasoning_effort: 'low' } }`): the HTTP
   * providers merge theirs into the request body, the AI SDK bridge passes them on as they are.
   * Sent with every call and never persisted, but do not put keys here: use the provider's
   * `apiKey`.
   */
  providerOptions?: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
}

const JSON_OBJECT = z.record(z.string(), z.unknown(), { error: 'must be an object of provider-specific fields' });

/** The rules of {@link ModelSettings}; unknown keys are refused, so a misspelt setting is not silently ignored. */
export const ModelSettingsSchema = z.strictObject({
  temperature: z.number({ error: 'must be a number' }).min(0, { error: 'must be a number ≥ 0' }).optional(),
  maxOutputTokens: z.number({ error: 'must be a positive integer' }).int({ error: 'must be a positive integer' }).min(1, { error: 'must be a positive integer' }).optional(),
  topP: z.number({ error: 'must be a number from 0 to 1' }).min(0, { error: 'must be a number from 0 to 1' }).max(1, { error: 'must be a number from 0 to 1' }).optional(),
  seed: z.number({ error: 'must be an integer' }).int({ error: 'must be an integer' }).optional(),
  stopSequences: z.array(z.string().min(1, { error: 'must not be empty' }), { error: 'must be an array of strings' }).optional(),
  providerOptions: z.record(z.string(), JSON_OBJECT, { error: 'must map provider ids to objects' }).optional(),
});

/**
 * Checks settings at definition time and returns a copy. Throws a `TypeError` naming the
 * setting and its rule (`agent "writer": settings.topP must be a number from 0 to 1`).
 */
export function defineModelSettings(owner: string, settings: unknown): ModelSettings {
  const parsed = ModelSettingsSchema.safeParse(settings);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => {
    if (issue.code === 'unrecognized_keys') return `settings has unknown ${issue.keys.length > 1 ? 'keys' : 'key'} ${issue.keys.map((k) => `"${k}"`).join(', ')} (known: ${Object.keys(ModelSettingsSchema.shape).join(', ')})`;
    const path = issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('');
    return path ? `settings${path} ${issue.message}` : `settings must be an object`;
  });
  throw new TypeError(`${owner}: ${problems.join('; ')}`);
}

/**
 * Provider-specific fields of `settings` for a provider known as `keys` (its family name,
 * `openai`, then its registry id when that differs): the later key wins a field both set.
 * `reserved` fields (the conversation, the tools, streaming) are the provider's own and are
 * dropped: a setting must not change what the provider parses.
 */
export function providerFields(settings: ModelSettings | undefined, keys: readonly string[], reserved: readonly string[]): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  for (const key of new Set(keys)) Object.assign(fields, settings?.providerOptions?.[key]);
  for (const key of reserved) delete fields[key];
  return fields;
}
