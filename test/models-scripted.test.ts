import { afterEach, describe, it } from 'vitest';
import { scriptedModel } from '../models/scripted.js';
import { modelProviderConformance } from '../testing/model-conformance.js';

// The offline model the examples and most tests run on keeps the same contract as the real
// providers (it does not stream).
modelProviderConformance('scriptedModel', async () => ({
  provider: scriptedModel({ script: { writer: ['Actors keep state.'] } }),
  request: { model: 'default', messages: [{ role: 'user', content: 'What do actors keep?' }], tools: [], agent: 'writer', runId: 'r1', step: 1, phase: 'plan', attempt: 0 },
  streams: false,
}), { describe, it, afterEach });
