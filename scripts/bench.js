// Runs a benchmark on compiled JavaScript, as a consumer of the package runs Troupe:
//
//   npm run bench [-- [--quick] [--only transport]]     bench/run-all.ts
//   node scripts/bench.js transport [--quick]            one file of bench/
//
// tsx's transform adds a helper call to every function it creates (esbuild's `keepNames`),
// up to ~15% of the transport's burst in alternating runs; the baselines (ws, msgpackr,
// XState, LangGraph.js) run as the JavaScript their packages ship. So the sources and the
// benchmarks are compiled with tsc into .bench-build/ (not dist/: the benchmarks import
// internals the package does not ship), and the benchmark runs there. Under tsx
// (`npx tsx bench/<file>.ts`) they still run, reporting `code: "source"`.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = fileURLToPath(new URL('../.bench-build', import.meta.url));
const [first, ...rest] = process.argv.slice(2);
const script = first && !first.startsWith('-') ? first : 'run-all';
const args = first && !first.startsWith('-') ? rest : process.argv.slice(2);

rmSync(out, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const built = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.bench.json'], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
if (built.status !== 0) process.exit(built.status ?? 1);
const run = spawnSync(process.execPath, [`${out}/bench/${script.replace(/\.ts$/, '')}.js`, ...args], { cwd: root, stdio: 'inherit' });
process.exit(run.status ?? 1);
