/**
 * Inside the repository everything runs from the TypeScript sources, no build: the
 * `troupe-source` export condition (vitest.config.ts, tsconfig.json, bin/dev.js) resolves
 * `import … from 'troupe'` to ./index.ts, the module relative imports reach, so a process holds
 * one copy of Troupe (one TroupeError class, one set of constants) whether dist/ exists or not.
 */
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { TROUPE_DEV_BIN } from './helpers/built-cli.js';
import { runTroupe } from './helpers/cli.js';
import { tempDir } from './helpers/temp.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

describe('sources inside the repository', () => {
  it('gives vitest one module for `troupe` and `../index.js`', async () => {
    const byName = await import('troupe');
    const byPath = await import('../index.js');
    expect(byName.TroupeError).toBe(byPath.TroupeError);
    expect(byName.createNode).toBe(byPath.createNode);
  });

  it('gives the in-repository CLI and the crew modules it loads one module graph', async () => {
    await using db = await tempDir();
    const { code, stderr, stdout } = await runTroupe(['run', 'test/fixtures/graph-crew.ts', '--db', db.path], { TROUPE_SCRIPTED_LATENCY_MS: '0' }, { bin: TROUPE_DEV_BIN });
    expect(stderr).toBe(`troupe resolves to ${pathToFileURL(join(ROOT, 'index.ts')).href}; one module graph: true\n`);
    expect(code).toBe(0);
    expect(stdout).toMatch(/\n\ndone$/);
  });

  it('loads commander only for `troupe --help`: no XState, LevelDB, ws or inspector', async () => {
    await using dir = await tempDir();
    // A resolve hook beneath tsx's records every module the CLI imports.
    const log = join(dir.path, 'resolved.txt');
    const tracer = join(dir.path, 'tracer.mjs');
    const hook = `import { appendFileSync } from 'node:fs';
      let out;
      export function initialize(data) { out = data.out; }
      export async function resolve(specifier, context, next) {
        const result = await next(specifier, context);
        appendFileSync(out, result.url + '\\n');
        return result;
      }`;
    await writeFile(tracer, `import { register } from 'node:module';\nregister(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hook)}`)}, { data: { out: ${JSON.stringify(log)} } });\n`);
    const exit = await new Promise<number | null>((resolve) => {
      const child = spawn(process.execPath, ['--import', pathToFileURL(tracer).href, join(ROOT, 'bin/dev.js'), '--help'], { cwd: ROOT, stdio: 'ignore' });
      child.on('exit', resolve);
    });
    expect(exit).toBe(0);
    const loaded = (await readFile(log, 'utf8')).split('\n').filter(Boolean);
    expect(loaded).toContainEqual(expect.stringMatching(/\/cli\/main\.ts$/));
    expect(loaded).toContainEqual(expect.stringMatching(/\/node_modules\/commander\//));
    const heavy = loaded.filter((url) => /\/node_modules\/(xstate|@xstate|classic-level|ws|msgpackr|log-update)\/|\/(inspector|core\/node|storage\/level|cli\/commands)\.ts$/.test(url));
    expect(heavy).toEqual([]);
  });
});
