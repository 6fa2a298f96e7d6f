#!/usr/bin/env node
// The `troupe` CLI of this checkout, from its TypeScript sources: no build needed (tests, the
// examples, `npm start`). Installed packages run the compiled dist/bin/troupe.js instead.
//
// tsx compiles the sources; the `troupe-source` export condition makes `import … from 'troupe'`
// (in examples and crew fixtures) resolve to ./index.ts as well, not to dist/: the CLI and the
// crew it loads then share one module graph (one TroupeError class, one set of constants).
import { register } from 'node:module';
import { register as registerTsxCjs } from 'tsx/cjs/api';
import { register as registerTsx } from 'tsx/esm/api';

// Registered before tsx, so it sits next to Node's resolver: every candidate tsx tries
// (`.js` → `.ts`) is resolved with the condition added.
register('data:text/javascript,export async function resolve(specifier, context, next) { return next(specifier, { ...context, conditions: [...context.conditions, "troupe-source"] }); }');
registerTsx();
// As cli/load.ts does for installed packages: a `.ts` crew outside any `"type": "module"` package
// is CommonJS, which only tsx's CommonJS hooks compile.
registerTsxCjs();
// Tells cli/load.ts that TypeScript crew modules load already (no second tsx).
globalThis[Symbol.for('troupe.typescript-loader')] = 'tsx';
await import('./troupe.ts');
