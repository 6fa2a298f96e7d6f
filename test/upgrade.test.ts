import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { countingIds, createNode, memoryStorage, systemClock, type RunDefinition, type Storage } from '../index.js';
import { upgradeRuns } from '../advanced.js';
import { layout } from '../core/layout.js';
import { createRunStore } from '../core/run-store.js';
import { levelStorage } from '../storage/level.js';
import older from './fixtures/approval-crew-older.js';
import current, { input, models, PUBLISHED } from './fixtures/approval-crew.js';
import next from './fixtures/approval-crew-v2.js';
import { runTroupe } from './helpers/cli.js';
import { useCleanups } from './helpers/cleanups.js';

const V2 = 'test/fixtures/approval-crew-v2.ts';

/** Starts run `runId` of `crew` and leaves it waiting for its approval. */
async function waitingRun(storage: Storage, crew: RunDefinition, runId: string, source: string) {
  await using node = await createNode({ storage, models, resume: false });
  const run = await node.run(crew, { input, runId, source });
  await new Promise<void>((done) => run.subscribe((event) => event.type === 'approval.requested' && done()));
}

/** Every stored key and value of run `runId` (and its approvals), to tell whether anything of it changed. */
async function everythingOf(storage: Storage, runId: string): Promise<Array<[string, string]>> {
  const out: Array<[string, string]> = [];
  for await (const [key, value] of storage.entries({})) if (key.includes(`:${runId}`) || (layout.isApproval(key) && Buffer.from(value).includes(runId))) out.push([key, Buffer.from(value).toString('hex')]);
  return out;
}

describe('troupe upgrade', () => {
  const fixtures = useCleanups();

  it('lists which waiting runs the new code continues cleanly, upgrades only those, and leaves a divergent run untouched', async () => {
    const dir = await fixtures.dir();
    const db = join(dir, 'db');
    {
      await using storage = await levelStorage({ path: db });
      await waitingRun(storage, current, 'same-prompt', resolve('test/fixtures/approval-crew.ts'));
      await waitingRun(storage, older, 'older-prompt', resolve('test/fixtures/approval-crew-older.ts'));
    }
    const dry = await runTroupe(['upgrade', '--crew', V2, '--db', db, '--dry-run', '--json']);
    expect(dry.stderr).toBe('');
    expect(dry.code).toBe(4);
    expect(JSON.parse(dry.stdout)).toEqual({
      upgrade: {
        crew: 'approval-crew',
        version: '2',
        dryRun: true,
        runs: [
          { runId: 'same-prompt', status: 'waiting', version: '1', verdict: 'clean' },
          { runId: 'older-prompt', status: 'waiting', version: '1', verdict: 'diverged', reason: 'publisher step 1: message 1 of 2: system: "Publish it." → message 1 of 2: system: "Publish the post."' },
        ],
      },
    });
    let untouched: Array<[string, string]>;
    {
      await using storage = await levelStorage({ path: db });
      untouched = await everythingOf(storage, 'older-prompt');
      // The dry run changed nothing.
      expect((await createRunStore(storage).requireRun('same-prompt')).version).toBe('1');
    }

    const real = await runTroupe(['upgrade', '--crew', V2, '--db', db]);
    expect(real.code).toBe(4);
    expect(real.stdout.split('\n').slice(1)).toEqual([
      '  same-prompt   waiting  v1  clean     upgraded: continues on the new code',
      '  older-prompt  waiting  v1  diverged  publisher step 1: message 1 of 2: system: "Publish it." → message 1 of 2: system: "Publish the post."; left as it is',
      '1 of 2 upgraded',
    ]);

    await using storage = await levelStorage({ path: db });
    const store = createRunStore(storage);
    expect(await store.requireRun('same-prompt')).toMatchObject({ status: 'waiting', version: '2', source: resolve(V2) });
    expect((await store.latestCheckpoint('same-prompt'))!.machine).toEqual({ id: 'approval-crew', version: '2' });
    expect(await everythingOf(storage, 'older-prompt')).toEqual(untouched);
    // The upgraded run goes on under the new code: its approval decided, it publishes.
    await using node = await createNode({ storage, models, crews: [next], resume: false });
    const [approval] = await node.approvals({ runId: 'same-prompt', status: 'pending' });
    await node.approve(approval!.id);
    expect((await node.get('same-prompt')!.result()).output).toBe(PUBLISHED);
  }, 120_000);

  it('finds a waiting run caught up with, and blocks an upgrade no migration reaches, writing nothing', async () => {
    await using storage = memoryStorage();
    await waitingRun(storage, current, 'waiting', 'approval-crew.ts');
    await using node = await createNode({ storage, models, resume: false });
    // The replay reaches the approval the run waits for, having asked for everything recorded.
    expect(await node.replay('waiting', { crew: next })).toMatchObject({ clean: true, ended: 'caught-up', calls: { recorded: 1, served: 1 } });
    const before = await everythingOf(storage, 'waiting');
    const v3 = { ...next, version: '3', migrations: [] };
    const [verdict] = await upgradeRuns({ storage, store: createRunStore(storage), models, clock: systemClock, ids: countingIds(), createNode }, { crew: v3, dryRun: false });
    expect(verdict).toMatchObject({ runId: 'waiting', verdict: 'blocked', version: '1' });
    expect(verdict!.reason).toMatch(/no migration leads from version "1" to it/);
    expect(verdict!.upgraded).toBeUndefined();
    expect(await everythingOf(storage, 'waiting')).toEqual(before);
  });
});
