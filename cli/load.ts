import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ModelProviders } from '../core/model.js';
import type { RunnableDefinition } from '../core/runtime.js';

/** What a crew module gives the CLI. */
export interface CrewModule {
  definition: RunnableDefinition;
  models: ModelProviders;
  input: string | undefined;
  /** Absolute path, recorded in the run so `troupe resume` can load it again. */
  path: string;
}

const isDefinition = (value: unknown): value is RunnableDefinition =>
  typeof value === 'object' && value !== null && typeof (value as RunnableDefinition).createMachine === 'function' && typeof (value as RunnableDefinition).id === 'string';

/**
 * Imports a crew module: its default export is the crew, `models` the providers it runs on,
 * `input` the task used when the command line gives none.
 */
export async function loadCrewModule(file: string): Promise<CrewModule> {
  const path = resolve(file);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (cause) {
    throw new Error(`cannot load crew module ${path}: ${(cause as Error).message}`, { cause });
  }
  if (!isDefinition(mod.default)) {
    throw new TypeError(`${path} must export a crew as its default export (export default crew({...}))`);
  }
  return {
    definition: mod.default,
    models: (mod.models as ModelProviders | undefined) ?? {},
    input: typeof mod.input === 'string' ? mod.input : undefined,
    path,
  };
}
