import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { levelStorage } from '../storage/level.js';
import { memoryStorage } from '../storage/memory.js';
import { isTroupeError } from '../core/errors.js';
import { storageConformance } from './storage-conformance.js';
import { tempDir } from './helpers/temp.js';

storageConformance('memory', async () => ({ storage: memoryStorage(), cleanup: async () => {} }));

storageConformance('LevelDB', async () => {
  const path = await mkdtemp(join(tmpdir(), 'troupe-level-'));
  return {
    storage: await levelStorage({ path }),
    reopen: () => levelStorage({ path }),
    cleanup: () => rm(path, { recursive: true, force: true }),
  };
});

it('refuses a LevelDB directory already open elsewhere with a clear STORAGE_FAILED error', async () => {
  await using dir = await tempDir();
  await using first = await levelStorage({ path: dir.path });
  const second = levelStorage({ path: dir.path });
  await expect(second).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'STORAGE_FAILED') && /in use by another process/.test((e as Error).message));
  expect(first.status).toBe('open');
});
