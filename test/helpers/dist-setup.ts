/**
 * vitest's global setup: makes dist/ current before any test spawns the compiled CLI
 * (test/helpers/built-cli.ts). `npm ci` builds it (`prepare`), so in CI this only checks;
 * after an edit of the sources it runs `npm run build` once, saying so.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** What dist/ is compiled from: tsconfig.build.json's inputs, the page it copies, the build itself. */
const SOURCES = ['actors', 'bin', 'cli', 'core', 'inspector', 'models', 'otel', 'storage', 'tools', 'transports'];
const FILES = ['index.ts', 'advanced.ts', 'testing.ts', 'package.json', 'tsconfig.build.json', 'scripts/build.js'];

function newest(path: string): number {
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.mtimeMs;
  let latest = 0;
  for (const name of readdirSync(path)) latest = Math.max(latest, newest(join(path, name)));
  return latest;
}

export default function setup(): void {
  const stamp = join(ROOT, 'dist/bin/troupe.js');
  const built = existsSync(stamp) ? statSync(stamp).mtimeMs : 0;
  const sources = Math.max(...SOURCES.map((dir) => newest(join(ROOT, dir))), ...FILES.filter((f) => existsSync(join(ROOT, f))).map((f) => statSync(join(ROOT, f)).mtimeMs));
  if (built > sources) return;
  process.stdout.write(built === 0 ? 'dist/ is missing: building it for the CLI tests (npm run build)\n' : 'sources changed since dist/ was built: rebuilding it for the CLI tests (npm run build)\n');
  const { status } = spawnSync(process.execPath, [join(ROOT, 'scripts/build.js')], { cwd: ROOT, stdio: 'inherit' });
  if (status !== 0) throw new Error(`npm run build failed (exit ${status}): the CLI tests need dist/`);
}
