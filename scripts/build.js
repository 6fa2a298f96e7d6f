// Builds dist/ (JS, .d.ts, declaration and source maps) from the TypeScript sources: the
// package's `exports` and `bin` point there. Runs on `npm ci` and `npm pack` through `prepare`.
import { chmodSync, copyFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const at = (path) => fileURLToPath(new URL(`../${path}`, import.meta.url));

// A file deleted or renamed in the sources must not live on in the package.
rmSync(at('dist'), { recursive: true, force: true });

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const { status } = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
if (status !== 0) process.exit(status ?? 1);

// tsc copies no assets: the inspector reads its page next to its module at run time.
copyFileSync(at('inspector/page.html'), at('dist/inspector/page.html'));
// Runnable as `./dist/bin/troupe.js` too, not only through npm's bin link.
chmodSync(at('dist/bin/troupe.js'), 0o755);
