import { rename } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { createNode, isTroupeError, scriptedModel, type Storage } from '../index.js';
import type { KeyRange } from '../core/storage.js';
import { createRunStore } from '../core/run-store.js';
import { levelStorage } from '../storage/level.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';
import { tempDir } from './helpers/temp.js';

// A node's start lists its runs and approvals while the audit log opens (core/node.ts): these
// attack that overlap. Vitest fails a file on an unhandled rejection, so a start that fails
// with one of its reads still in flight would fail here even where the assertions pass.

const models = () => ({ scripted: scriptedModel({ script: pairScript }) });

/** `inner` whose range reads starting at `failAt` throw a storage error. */
function failingRange(inner: Storage, failAt: string): Storage {
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === 'entries') {
        return (range: KeyRange) => {
          if (range.gte !== failAt) return target.entries(range);
          return (async function* (): AsyncGenerator<[string, Uint8Array]> {
            throw new Error(`disk read failed at ${failAt}`);
          })();
        };
      }
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

describe('node start', () => {
  it('fails with AUDIT_KEY_MISSING when the audit key of a keyed database is gone, touching no run, and resumes the run once the key is back', async () => {
    await using dir = await tempDir();
    const def = twoAgentCrew();
    const runId = 'waiting-2';
    {
      // Its own storage: the audit log is opened once per storage object and kept.
      await using storage = await levelStorage({ path: dir.path });
      await using first = await createNode({ storage, models: models(), crews: [def] });
      // A completed run keys the audit log; the submitted one is what the next start resumes.
      expect((await (await first.run(def, { input: 'one', runId: 'done-1' })).result()).output).toBe('final: a brief about actor and state');
      await first.submit(def, { input: 'two', runId });
    }
    const storage = await levelStorage({ path: dir.path });
    try {

      await rename(`${dir.path}.audit`, `${dir.path}.audit-away`);
      await expect(createNode({ storage, models: models(), crews: [def] })).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'AUDIT_KEY_MISSING'));
      // Both failing: the audit log's error is the one reported, the listing's is not left unhandled.
      await expect(createNode({ storage: failingRange(storage, 'run:'), models: models(), crews: [def] })).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'AUDIT_KEY_MISSING'));
      const record = await createRunStore(storage).requireRun(runId);
      expect({ status: record.status, checkpoint: record.checkpoint }).toEqual({ status: 'running', checkpoint: 0 });

      await rename(`${dir.path}.audit-away`, `${dir.path}.audit`);
      const second = await createNode({ storage, models: models(), crews: [def] });
      try {
        const handle = second.get(runId);
        expect(handle, 'the submitted run is resumed at start').toBeDefined();
        expect((await handle!.result()).output).toBe('final: a brief about actor and state');
      } finally {
        await second.close();
      }
    } finally {
      await storage.close();
    }
  });

  for (const failAt of ['run:', 'approval:']) {
    it(`rejects with the storage error when listing ${failAt} rows fails at start, and a later start resumes the run`, async () => {
      await using dir = await tempDir();
      const def = twoAgentCrew();
      const storage = await levelStorage({ path: dir.path });
      try {
        const first = await createNode({ storage, models: models(), crews: [def], resume: false });
        const runId = await first.submit(def, { input: 'go', runId: 'submitted-1' });
        await first.close();

        await expect(createNode({ storage: failingRange(storage, failAt), models: models(), crews: [def] })).rejects.toThrow(`disk read failed at ${failAt}`);

        const node = await createNode({ storage, models: models(), crews: [def] });
        try {
          expect((await node.get(runId)!.result()).output).toBe('final: a brief about actor and state');
        } finally {
          await node.close();
        }
      } finally {
        await storage.close();
      }
    });
  }
});
