import { expect, it } from 'vitest';
import { agent, createNode, createRouter, crew, manualClock, memoryStorage, scriptedModel } from '../index.js';
import { createRunStore } from '../core/run-store.js';

it('resumes a persisted run whose model was retired on its replacement, recording the switch', async () => {
  const clock = manualClock(Date.parse('2026-01-01T00:00:00Z'));
  const script = { solo: [{ text: 'step one', toolCalls: [{ name: 'read_blackboard', args: {} }] }, 'step two'] };
  const providers = () => ({ old: scriptedModel({ id: 'old', script }), next: scriptedModel({ id: 'next', script, latencyMs: 0 }) });
  const router = (p: ReturnType<typeof providers>) =>
    createRouter({ providers: p, routes: { main: ['old:v1'] }, deprecations: { 'old:v1': { replacedBy: 'next:v2', after: '2026-06-01T00:00:00Z' } }, clock });
  const def = crew({ id: 'dep', blackboard: true, agents: [agent({ id: 'solo', role: 's', instructions: 'i', model: 'router:main' })] });
  await using storage = memoryStorage();

  const p1 = providers();
  const first = await createNode({ storage, clock, models: { ...p1, router: router(p1) } });
  const run = await first.run(def, { input: 'go', runId: 'd1' });
  await new Promise<void>((resolve) => run.subscribe((e) => e.type === 'tool.call' && resolve()));
  await first.close();
  const before = (await createRunStore(storage).latestCheckpoint('d1'))!;

  clock.advance(200 * 24 * 3600 * 1000); // the model is retired while the run is down
  const p2 = providers();
  await using second = await createNode({ storage, clock, models: { ...p2, router: router(p2) }, crews: [def] });
  expect((await second.get('d1')!.result()).output).toBe('step two');

  const calls = (await createRunStore(storage).journal('d1')).filter((e) => e.kind === 'model.call').map((e) => e.data);
  expect(calls.map((c) => c.model)).toEqual(['old:v1', 'next:v2']);
  expect(calls[1]).toMatchObject({ requested: 'router:main', meta: { deprecated: { from: 'old:v1', to: 'next:v2' } } });
  // The conversation recorded before the switch is untouched by it.
  type Snap = { children: { solo: { snapshot: { context: { conversation: unknown[] } } } } };
  const after = (await createRunStore(storage).latestCheckpoint('d1'))!;
  const convBefore = (before.snapshot as Snap).children.solo.snapshot.context.conversation;
  const convAfter = (after.snapshot as Snap).children.solo.snapshot.context.conversation;
  expect(convAfter.slice(0, convBefore.length)).toEqual(convBefore);
});
