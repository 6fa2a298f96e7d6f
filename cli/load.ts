import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join, resolve } from 'node:path';
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

const TYPESCRIPT = new Set(['.ts', '.mts', '.cts']);

/**
 * Set (to the loader's name) once TypeScript modules can be imported in this process: by
 * `bin/dev.js`, which runs the CLI itself under tsx, or by {@link typescriptLoader}.
 */
const LOADER = Symbol.for('troupe.typescript-loader');
const loaderState = globalThis as { [LOADER]?: string };

interface TsxApi {
  register(): unknown;
}

const code = (error: unknown) => (error as NodeJS.ErrnoException | undefined)?.code;

/**
 * Makes `.ts`/`.mts`/`.cts` crew modules importable: registers tsx, once. tsx is an optional
 * peer dependency, so it is looked up next to Troupe first, then from the crew module's own
 * directory (a global `troupe` running a project that has tsx).
 *
 * The crew is then imported by file URL (the ESM path). Both of tsx's hook sets are needed:
 * a `.ts` file in a package without `"type": "module"` is CommonJS (as TypeScript itself sees
 * it), and tsx's ESM hooks hand such a file to Node's CommonJS loader. Without tsx's CommonJS
 * hooks there, Node loads the file untranspiled, detects its `import` syntax, loads it as ESM
 * through `require()`, and fails with the misleading "Cannot require() ES Module … in a cycle".
 */
async function typescriptLoader(path: string): Promise<void> {
  if (loaderState[LOADER]) return;
  const tsx = (await importTsx(import.meta.url)) ?? (await importTsx(pathToFileURL(path).href));
  if (!tsx) {
    throw new Error(
      `${path} is TypeScript, and loading it needs tsx, which is not installed: ` +
        `run \`npm install --save-dev tsx\` in the crew's project, or write the crew module as .mjs/.js`,
    );
  }
  tsx.esm.register();
  tsx.cjs.register();
  loaderState[LOADER] = 'tsx';
}

/**
 * Imports the ESM builds of `tsx/esm/api` and `tsx/cjs/api` as seen from `parent`, or
 * `undefined` when tsx is not installed there. `require.resolve` is the only resolver Node 20
 * offers from an arbitrary place, and it picks tsx's CommonJS builds (which cannot register
 * their hooks when imported), so the `import` targets are read from tsx's own `exports` map.
 */
async function importTsx(parent: string): Promise<{ esm: TsxApi; cjs: TsxApi } | undefined> {
  let manifestPath: string;
  try {
    manifestPath = createRequire(parent).resolve('tsx/package.json');
  } catch (error) {
    if (code(error) === 'MODULE_NOT_FOUND') return undefined;
    throw error;
  }
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as { exports?: Record<string, unknown> };
  const load = async (subpath: string) => {
    const target = importTarget(manifest.exports?.[subpath]);
    if (!target) throw new Error(`the tsx at ${dirname(manifestPath)} has no \`tsx${subpath.slice(1)}\` (Troupe needs tsx 4.7 or later)`);
    return (await import(pathToFileURL(join(dirname(manifestPath), target)).href)) as TsxApi;
  };
  return { esm: await load('./esm/api'), cjs: await load('./cjs/api') };
}

/** The file a conditional `exports` entry gives to `import` (Node's `import` then `default`). */
function importTarget(entry: unknown): string | undefined {
  if (typeof entry === 'string') return entry;
  if (typeof entry !== 'object' || entry === null) return undefined;
  const conditions = entry as Record<string, unknown>;
  return importTarget(conditions['import']) ?? importTarget(conditions['node']) ?? importTarget(conditions['default']);
}

/**
 * Rewords Node's "Cannot find package 'zod' imported from …": a crew module's imports resolve
 * from where the module is (its project's node_modules), not from where Troupe is installed.
 */
function explainLoadError(path: string, cause: unknown): Error {
  const message = (cause as Error | undefined)?.message ?? String(cause);
  const missing = /Cannot find (?:package|module) '([^']+)' imported from (.+)$/m.exec(message);
  if (code(cause) === 'ERR_MODULE_NOT_FOUND' && missing) {
    const [, specifier, importer] = missing as unknown as [string, string, string];
    if (/^[./]|^file:/.test(specifier)) return new Error(`cannot load crew module ${path}: ${importer} imports "${specifier}", but there is no such file`, { cause });
    const name = specifier.split('/').slice(0, specifier.startsWith('@') ? 2 : 1).join('/');
    const hint = `"${name}" is not installed where that module is; run \`npm install ${name}\` in its project (${dirname(importer)})`;
    return new Error(`cannot load crew module ${path}: ${importer} imports "${specifier}", but ${hint}`, { cause });
  }
  return new Error(`cannot load crew module ${path}: ${message}`, { cause });
}

/**
 * Imports a crew module: its default export is the crew, `models` the providers it runs on,
 * `input` the task used when the command line gives none. The module is imported by file URL,
 * so its own imports (`troupe`, `zod`, …) resolve from its location; a TypeScript module needs
 * tsx installed (see {@link typescriptLoader}), a `.js`/`.mjs` one needs nothing.
 */
export async function loadCrewModule(file: string): Promise<CrewModule> {
  const path = resolve(file);
  if (!existsSync(path)) throw new Error(`cannot load crew module ${path}: no such file`);
  if (TYPESCRIPT.has(extname(path))) await typescriptLoader(path);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (cause) {
    throw explainLoadError(path, cause);
  }
  // A CommonJS crew module (see typescriptLoader) arrives as `{ default: module.exports }`.
  const wrapped = mod.default as Record<string, unknown> | undefined;
  if (!isDefinition(mod.default) && typeof wrapped === 'object' && wrapped !== null && isDefinition(wrapped.default)) mod = wrapped;
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
