/**
 * The `troupe` CLI the tests spawn: the compiled `dist/bin/troupe.js`, as installed packages
 * run it. A child on the TypeScript sources (bin/dev.js) spends about a second of CPU in
 * tsx's loader hooks before it does anything, and the suite spawns a few hundred of them on
 * two cores. `test/helpers/dist-setup.ts` (vitest's global setup) rebuilds dist/ first when
 * any source is newer, so a test never runs yesterday's code.
 */
import { fileURLToPath } from 'node:url';

/** The compiled CLI entry point. */
export const TROUPE_BIN = fileURLToPath(new URL('../../dist/bin/troupe.js', import.meta.url));

/** The CLI on the TypeScript sources, for the tests of that entry point itself. */
export const TROUPE_DEV_BIN = fileURLToPath(new URL('../../bin/dev.js', import.meta.url));
