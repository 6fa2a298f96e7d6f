#!/usr/bin/env node
/**
 * The `troupe` executable of the package (`dist/bin/troupe.js`): plain Node runs it, no
 * TypeScript loader. `cli/load.ts` registers tsx only when a crew module is TypeScript.
 * Inside the repository `bin/dev.js` runs the same CLI from its sources.
 * @module
 */
import '../cli/main.js';
