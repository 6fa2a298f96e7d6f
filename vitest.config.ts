import { defineConfig } from 'vitest/config';

// `import … from 'troupe'` (examples, crew fixtures) resolves through the package's exports;
// the `troupe-source` condition picks ./index.ts there, the very module `../index.js` is in
// the tests: one module graph, no build needed. Without it, it would be dist/ (or nothing).
// The rest is Vite's default for server code (its `defaultServerConditions`, which setting
// the option replaces) without `module`: that one picks bundler builds with extensionless
// imports (@opentelemetry/api's), which Node cannot load.
const conditions = ['troupe-source', 'node', 'development|production'];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions } },
  test: {
    include: ['test/**/*.test.ts'],
    // The CLI tests spawn the compiled CLI; this rebuilds dist/ when a source is newer.
    globalSetup: ['test/helpers/dist-setup.ts'],
    // Crash tests spawn real child processes; two cores means two workers at most.
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
