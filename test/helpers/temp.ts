import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A temporary directory removed on dispose (`await using dir = await tempDir()`), with the
 * audit directory a database opened at `path` itself keeps beside it (`<path>.audit`).
 */
export async function tempDir(prefix = 'troupe-test-'): Promise<{ path: string } & AsyncDisposable> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return {
    path,
    [Symbol.asyncDispose]: async () => {
      await rm(path, { recursive: true, force: true });
      await rm(`${path}.audit`, { recursive: true, force: true });
    },
  };
}
