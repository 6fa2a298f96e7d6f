/**
 * The package as a user gets it: `npm pack`, installed into a fresh project without tsx, then
 * used from plain Node (ESM and CommonJS), through its `troupe` bin, and type-checked from
 * TypeScript under the strictest settings against the built declarations.
 */
import { execFile } from 'node:child_process';
import { cp, mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from './helpers/temp.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const FIXTURES = join(ROOT, 'test/fixtures/consumer');
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');

interface Manifest {
  version: string;
  exports: Record<string, unknown>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
}
interface LockEntry {
  dev?: boolean;
  [key: string]: unknown;
}

// Children run as a user's would: no loader preloaded by the test runner's environment.
const { NODE_OPTIONS: _ignored, ...userEnv } = process.env;
const env = { ...userEnv, NO_COLOR: '1', TROUPE_SCRIPTED_LATENCY_MS: '0' };

/** Runs a command to its end; a non-zero exit resolves too (the test asserts on it). */
async function sh(file: string, args: string[], cwd: string) {
  try {
    const { stdout, stderr } = await run(file, args, { cwd, env, maxBuffer: 16 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof failed.code === 'number' ? failed.code : 1, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

/** Copies the checkout without node_modules, dist and git, so packing builds from scratch here. */
async function copyCheckout(to: string) {
  const skip = new Set(['node_modules', 'dist', '.git', '.troupe', 'coverage']);
  for (const entry of await readdir(ROOT)) {
    if (!skip.has(entry)) await cp(join(ROOT, entry), join(to, entry), { recursive: true });
  }
  await symlink(join(ROOT, 'node_modules'), join(to, 'node_modules'), 'dir');
}

/**
 * npm 11 fetches full registry documents for any package it has to resolve, and `npm ci`
 * caches only abbreviated ones, so `npm install --offline` in an empty project fails. The new
 * project's lockfile is therefore seeded with the repository's entries for Troupe's runtime
 * dependencies (and @types/node for the type-check): npm then resolves nothing, takes every
 * tarball from the cache `npm ci` filled, and installs the packed tarball against them.
 */
async function seedProject(dir: string, manifest: Manifest) {
  const lock = JSON.parse(await readFile(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const devWanted = new Set(['node_modules/@types/node', 'node_modules/undici-types']);
  const dependencies = { zod: manifest.dependencies['zod']! };
  const devDependencies = { '@types/node': manifest.devDependencies['@types/node']! };
  const packages: Record<string, unknown> = { '': { name: 'consumer', version: '1.0.0', dependencies, devDependencies } };
  for (const [key, entry] of Object.entries(lock.packages)) {
    if (key === '' || key.startsWith('node_modules/troupe')) continue;
    if (!entry.dev || devWanted.has(key)) packages[key] = entry;
  }
  const pkg = { name: 'consumer', version: '1.0.0', private: true, type: 'module', dependencies, devDependencies };
  await writeFile(join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  await writeFile(join(dir, 'package-lock.json'), `${JSON.stringify({ name: 'consumer', version: '1.0.0', lockfileVersion: 3, requires: true, packages }, null, 2)}\n`);
}

/** The strictest settings a consumer might use; Troupe's declarations must pass all of them. */
const STRICTEST = {
  compilerOptions: {
    target: 'ES2022',
    lib: ['ES2023', 'ESNext.Disposable'],
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    strict: true,
    exactOptionalPropertyTypes: true,
    noUncheckedIndexedAccess: true,
    noPropertyAccessFromIndexSignature: true,
    skipLibCheck: false,
    noEmit: true,
    types: ['node'],
  },
  files: ['app.ts'],
};

describe('the packed package in a fresh project', () => {
  let work: { path: string } & AsyncDisposable;
  let app: string;
  let files: string[];
  let manifest: Manifest;

  beforeAll(async () => {
    work = await tempDir('troupe-package-');
    const checkout = join(work.path, 'checkout');
    app = join(work.path, 'app');
    await mkdir(checkout);
    await mkdir(app);
    await copyCheckout(checkout);
    manifest = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as Manifest;

    // What `prepare` does on `npm ci` and `npm pack`, run here explicitly so its output stays
    // out of `npm pack --json`.
    const build = await sh('npm', ['run', 'build'], checkout);
    expect(build.code, build.stdout + build.stderr).toBe(0);
    const packed = await sh('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work.path], checkout);
    expect(packed.code, packed.stderr).toBe(0);
    const [info] = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
    files = info!.files.map((f) => f.path);

    await seedProject(app, manifest);
    const install = await sh('npm', ['install', '--offline', '--no-audit', '--no-fund', join(work.path, info!.filename)], app);
    expect(install.code, install.stderr).toBe(0);
    for (const name of ['crew.mjs', 'main.mjs', 'main.cjs', 'app.ts']) await cp(join(FIXTURES, name), join(app, name));
    await cp(join(FIXTURES, 'crew.mjs'), join(app, 'crew.ts'));
    await writeFile(join(app, 'tsconfig.json'), JSON.stringify(STRICTEST, null, 2));
  }, 300_000);

  afterAll(async () => {
    await work?.[Symbol.asyncDispose]();
  });

  it('ships the build, the README and the docs, not the sources, tests, benches or examples', () => {
    expect(files).toEqual(expect.arrayContaining(['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts', 'dist/index.d.ts.map', 'dist/index.js.map', 'dist/advanced.d.ts', 'dist/bin/troupe.js', 'dist/inspector/page.html']));
    expect(files.filter((f) => !/^(dist|docs)\/|^(package\.json|README\.md|LICENSE)$/.test(f))).toEqual([]);
    expect(files.filter((f) => /^dist\/(test|bench|examples)\//.test(f) || (f.endsWith('.ts') && !f.endsWith('.d.ts')))).toEqual([]);
  });

  it('installs without tsx', async () => {
    await expect(readdir(join(app, 'node_modules/tsx'))).rejects.toThrow(/ENOENT/);
    await expect(readdir(join(app, 'node_modules/esbuild'))).rejects.toThrow(/ENOENT/);
  });

  it('runs a two-agent crew from an .mjs file in plain Node', async () => {
    const { code, stdout, stderr } = await sh(process.execPath, ['main.mjs'], app);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).toBe('completed: Brief: actors own their state and exchange messages.\n');
  });

  it('is require()-able from CommonJS, sharing one instance with import', async () => {
    const { code, stdout, stderr } = await sh(process.execPath, ['main.cjs'], app);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    // troupe/mcp, troupe/otel and troupe/storage/postgres need optional peers this project does not have.
    const entryPoints = Object.keys(manifest.exports).filter((s) => !['./package.json', './mcp', './otel', './storage/postgres'].includes(s)).map((s) => `troupe${s.slice(1)}`);
    expect(entryPoints).toContain('troupe/transports/ws');
    expect(JSON.parse(stdout)).toEqual({ version: manifest.version, createNode: 'function', decide: 'function', manualClock: 'function', sameInstance: true, required: entryPoints });
  });

  it('has a troupe bin that prints its version and runs a crew module of the project', async () => {
    const version = await sh('npx', ['--offline', 'troupe', '--version'], app);
    expect(version.stdout.trim()).toBe(manifest.version);
    const ran = await sh('npx', ['--offline', 'troupe', 'run', 'crew.mjs', '--db', join(work.path, 'db')], app);
    expect(ran.stderr).toBe('');
    expect(ran.code).toBe(0);
    expect(ran.stdout).toMatch(/researcher\s+tool lookup ok/);
    expect(ran.stdout).toMatch(/completed in [\d.]+ s\n\nBrief: actors own their state and exchange messages\.\n$/);
  });

  it('runs crew modules of another directory, resolving their imports from there', async () => {
    // No package.json: CommonJS scope, where a .ts file is CommonJS (tsx's CommonJS hooks).
    // Its node_modules has troupe and zod (the app's, as links) and tsx, which the app lacks.
    const other = join(work.path, 'other');
    await mkdir(join(other, 'node_modules'), { recursive: true });
    for (const name of ['troupe', 'zod']) await symlink(join(app, 'node_modules', name), join(other, 'node_modules', name), 'dir');
    await symlink(join(ROOT, 'node_modules/tsx'), join(other, 'node_modules/tsx'), 'dir');
    await cp(join(FIXTURES, 'crew.mjs'), join(other, 'crew.ts'));
    await cp(join(FIXTURES, 'crew.mjs'), join(other, 'crew.mjs'));
    for (const file of ['crew.ts', 'crew.mjs']) {
      const ran = await sh('npx', ['--offline', 'troupe', 'run', join(other, file), '--db', join(work.path, `db-${file}`)], app);
      expect(ran.stderr).toBe('');
      expect(ran.code).toBe(0);
      expect(ran.stdout).toMatch(/\n\nBrief: actors own their state and exchange messages\.\n$/);
    }
  });

  it('names a crew module\'s missing import and where to install it', async () => {
    await writeFile(join(app, 'missing.mjs'), (await readFile(join(FIXTURES, 'crew.mjs'), 'utf8')).replace("from 'zod'", "from 'zod-not-installed'"));
    const ran = await sh('npx', ['--offline', 'troupe', 'run', 'missing.mjs', '--db', join(work.path, 'db-missing')], app);
    expect(ran.code).toBe(1);
    expect(ran.stderr).toContain(`missing.mjs imports "zod-not-installed", but "zod-not-installed" is not installed where that module is; run \`npm install zod-not-installed\` in its project (${app})`);
  });

  it('says to install tsx when a crew module is TypeScript and tsx is missing', async () => {
    const ran = await sh('npx', ['--offline', 'troupe', 'run', 'crew.ts', '--db', join(work.path, 'db-ts')], app);
    expect(ran.code).toBe(1);
    expect(ran.stderr).toMatch(/crew\.ts is TypeScript, and loading it needs tsx, which is not installed: run `npm install --save-dev tsx`/);
  });

  it('type-checks a consumer under the strictest settings without errors in Troupe or the consumer', async () => {
    const { stdout, stderr } = await sh(process.execPath, [TSC, '-p', '.'], app);
    expect(stderr).toBe('');
    const errors = stdout.split('\n').filter((line) => /error TS\d+/.test(line));
    // xstate 5's own setup.d.ts fails `exactOptionalPropertyTypes` (5 errors, the same in an
    // app that imports xstate alone); only skipLibCheck hides them. Anything else is ours.
    const ours = errors.filter((line) => !line.startsWith('node_modules/xstate/'));
    expect(ours).toEqual([]);
  }, 120_000);
});
