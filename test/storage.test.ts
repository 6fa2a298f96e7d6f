import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { levelStorage } from '../storage/level.js';
import { memoryStorage } from '../storage/memory.js';
import { isTroupeError } from '../core/errors.js';
import { storageConformance } from '../testing.js';
import { tempDir } from './helpers/temp.js';

storageConformance({ describe, it, afterEach }, 'memory', async () => ({ storage: memoryStorage(), cleanup: async () => {} }), { durable: false });

storageConformance({ describe, it, afterEach }, 'LevelDB', async () => {
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

describe('the write queue', () => {
  it('makes callers wait for room once the bytes queued exceed its bound, and lets them go as writes land', async () => {
    const { createWriteQueue } = await import('../core/write-queue.js');
    const { memoryStorage: memory } = await import('../storage/memory.js');
    const inner = memory();
    const gates: Array<() => void> = [];
    // Each write waits until the test lets it land: the disk is slower than the producers.
    const slow = Object.create(inner) as typeof inner;
    Object.defineProperty(slow, 'write', { value: (ops: never, o?: never) => new Promise<void>((resolve) => gates.push(resolve)).then(() => inner.write(ops, o)) });
    const queue = createWriteQueue(slow, { sync: false, maxQueuedBytes: 1000 });
    const big = (key: string) => [{ type: 'put' as const, key, value: new Uint8Array(600) }];
    expect(queue.room()).toBeUndefined();
    const first = queue.write(big('a'));
    expect(queue.room()).toBeUndefined();
    const second = queue.write(big('b'));
    let roomy = false;
    const room = queue.room();
    expect(room).toBeInstanceOf(Promise);
    void room!.then(() => (roomy = true));
    expect(queue.stats.maxQueuedBytes).toBeGreaterThanOrEqual(1200);
    gates.shift()!();
    await first;
    // `b` is still queued: 600 bytes, below the bound again.
    await room;
    expect(roomy).toBe(true);
    expect(queue.room()).toBeUndefined();
    gates.shift()!();
    await second;
    expect(queue.stats.queuedBytes).toBe(0);
  });
});
