import { expect, it } from 'vitest';
import { createLiveState, foldEvent, renderLive } from '../cli/live-view.js';

it('folds run events into a live view of agents, their states and recent messages', () => {
  const s = createLiveState();
  foldEvent(s, { type: 'run.started', runId: 'r1', crew: 'team' });
  foldEvent(s, { type: 'state', runId: 'r1', actor: 'lead', state: 'planning' });
  foldEvent(s, { type: 'model.call', runId: 'r1', actor: 'lead', callId: 'c', model: 'scripted:default', usage: { inputTokens: 10, outputTokens: 5 }, ms: 3, replayed: false });
  foldEvent(s, { type: 'state', runId: 'r1', actor: 'lead', state: 'delegating' });
  foldEvent(s, { type: 'tool.call', runId: 'r1', actor: 'worker', callId: 'd', tool: 'search', ok: false, replayed: false, ms: 1 });
  for (let i = 0; i < 8; i++) foldEvent(s, { type: 'message', runId: 'r1', from: 'r1/crew', to: `r1/w${i}`, messageType: 'task' });
  foldEvent(s, { type: 'checkpoint', runId: 'r1', seq: 12 });
  const text = renderLive(s, false);
  expect(text.split('\n')[0]).toBe('run r1  crew team · checkpoint 12');
  expect(text).toMatch(/lead\s+delegating\s+1 model · 0 tools · 15 tok\s+model scripted:default/);
  expect(text).toMatch(/worker\s+0 model · 1 tools · 0 tok\s+tool search error/);
  // Only the last six messages are kept.
  expect(text).not.toMatch(/w1\b/);
  expect(text).toMatch(/crew → w7 {2}task/);
});
