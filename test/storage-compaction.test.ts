import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createNode, scriptedModel } from '../index.js';
import { createRunStore } from '../core/run-store.js';
import { layout } from '../core/layout.js';
import type { StorageOp } from '../core/storage.js';
import { createDeletionCompaction, deletionGroupOf } from '../storage/deletion-compaction.js';
import { levelStorage } from '../storage/level.js';
import { runTroupe } from './helpers/cli.js';
import { stepCrew } from '../bench/durable-step.js';
import { tempDir } from './helpers/temp.js';

const MiB = 1024 * 1024;
const WRITER = fileURLToPath(new URL('./fixtures/compacting-writer.ts', import.meta.url));

async function directoryBytes(dir: string): Promise<number> {
  let bytes = 0;
  for (const name of await readdir(dir)) bytes += (await stat(join(dir, name))).size;
  return bytes;
}

const key = (i: number) => `actor:r1:worker:${String(i).padStart(12, '0')}`;
const puts = (from: number, n: number): StorageOp[] => Array.from({ length: n }, (_, i) => ({ type: 'put', key: key(from + i), value: randomBytes(2048) }));
const dels = (from: number, n: number): StorageOp[] => Array.from({ length: n }, (_, i) => ({ type: 'del', key: key(from + i) }));

/** 8 MiB that do not compress written in batches (two memtables' worth: LevelDB flushes them to tables), then all deleted. */
async function writeThenDeleteAll(storage: { write(ops: readonly StorageOp[]): Promise<void> }) {
  for (let i = 0; i < 4000; i += 500) await storage.write(puts(i, 500));
  for (let i = 0; i < 4000; i += 500) await storage.write(dels(i, 500));
}

describe('compaction triggered by deletes', () => {
  it('groups keys by their first two segments: one run (or node) per group', () => {
    expect(deletionGroupOf('actor:run-1:worker:000000000001')).toBe('actor:run-1:');
    expect(deletionGroupOf('ckpt:run-1:000000000007')).toBe('ckpt:run-1:');
    expect(deletionGroupOf('outbox:peer:000000000001..000000000256')).toBe('outbox:peer:');
    expect(deletionGroupOf('transport:epoch')).toBe('transport:epoch');
    expect(deletionGroupOf('plain')).toBe('plain');
  });

  it('compacts the span of a group once it saw the threshold of deletes, one range at a time, and never with threshold 0', async () => {
    const calls: Array<[string, string]> = [];
    const gates: Array<() => void> = [];
    const compaction = createDeletionCompaction({
      threshold: 3,
      compact: (first, last) => {
        calls.push([first, last]);
        return new Promise<void>((resolve) => gates.push(resolve));
      },
    });
    const del = (k: string): StorageOp => ({ type: 'del', key: k });
    compaction.committed([del('actor:a:x:3'), del('actor:b:x:1'), { type: 'put', key: 'actor:a:x:9', value: new Uint8Array(1) }, del('actor:a:x:1')]);
    expect(calls).toEqual([]);
    compaction.committed([del('actor:a:x:2'), del('actor:b:x:2'), del('actor:b:x:5')]);
    // Both groups are due; the second waits for the first.
    expect(calls).toEqual([['actor:a:x:1', 'actor:a:x:3']]);
    gates.shift()!();
    await new Promise((resolve) => setImmediate(resolve));
    expect(calls).toEqual([
      ['actor:a:x:1', 'actor:a:x:3'],
      ['actor:b:x:1', 'actor:b:x:5'],
    ]);
    gates.shift()!();
    await compaction.idle();
    expect(compaction.compactions).toBe(2);

    const never = createDeletionCompaction({ threshold: 0, compact: () => Promise.reject(new Error('must not compact')) });
    never.committed(Array.from({ length: 100 }, (_, i) => del(`actor:a:x:${i}`)));
    await never.idle();
    expect(never.compactions).toBe(0);
  });

  it('stop() waits for the running compaction and drops the ones still waiting', async () => {
    const calls: string[] = [];
    let finish!: () => void;
    const compaction = createDeletionCompaction({ threshold: 1, compact: (first) => (calls.push(first), new Promise<void>((resolve) => (finish = resolve))) });
    compaction.committed([{ type: 'del', key: 'a:1:x' }, { type: 'del', key: 'b:1:x' }]);
    const stopped = compaction.stop();
    let done = false;
    void stopped.then(() => (done = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(done).toBe(false);
    finish();
    await stopped;
    expect(calls).toEqual(['a:1:x']);
  });

  it('a LevelDB that deleted most of its keys gives the space back by itself, and keeps what was not deleted', async () => {
    await using dir = await tempDir();
    await using storage = await levelStorage({ path: dir.path, compactAfterDeletes: 1000 });
    await storage.write([{ type: 'put', key: 'kept:1', value: new Uint8Array([7]) }]);
    await writeThenDeleteAll(storage);
    await storage.compactionIdle();
    expect(storage.compactions).toBeGreaterThanOrEqual(1);
    expect(await directoryBytes(dir.path)).toBeLessThan(1 * MiB);
    expect([...(await storage.get('kept:1'))!]).toEqual([7]);
    expect(await storage.get(key(10))).toBeUndefined();
  });

  it('without it (compactAfterDeletes: 0) the same deletes leave the space taken until `compact()`', async () => {
    await using dir = await tempDir();
    await using storage = await levelStorage({ path: dir.path, compactAfterDeletes: 0 });
    await writeThenDeleteAll(storage);
    await storage.compactionIdle();
    expect(storage.compactions).toBe(0);
    expect(await directoryBytes(dir.path)).toBeGreaterThan(4 * MiB);
    await storage.compact();
    expect(await directoryBytes(dir.path)).toBeLessThan(1 * MiB);
  });

  it('refuses a negative or fractional threshold with a TypeError that states the rule', async () => {
    await using dir = await tempDir();
    await expect(levelStorage({ path: dir.path, compactAfterDeletes: -1 })).rejects.toThrow(/compactAfterDeletes must be a non-negative integer/);
    await expect(levelStorage({ path: dir.path, compactAfterDeletes: 1.5 })).rejects.toThrow(TypeError);
  });

  it('a long run with retention compacts as it goes, and its kept checkpoints still rebuild', async () => {
    await using dir = await tempDir();
    const { def, script } = stepCrew('compacting', 120);
    await using storage = await levelStorage({ path: dir.path, compactAfterDeletes: 50 });
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script }) }, retention: { keepLast: 5, keepEvery: 0 }, auditDir: false });
    const run = await node.run(def, { input: 'go', runId: 'compacting-1' });
    await run.result();
    await storage.compactionIdle();
    expect(storage.compactions).toBeGreaterThanOrEqual(2);
    const store = createRunStore(storage);
    const marks = await store.checkpointMarks('compacting-1');
    expect(marks.length).toBeGreaterThan(0);
    expect(marks.length).toBeLessThanOrEqual(6);
    for (const { seq } of marks) expect((await store.checkpoint('compacting-1', seq))?.seq).toBe(seq);
    const manifests: string[] = [];
    for await (const [k] of storage.entries(layout.checkpoints('compacting-1'))) manifests.push(k);
    expect(manifests).toHaveLength(marks.length);
  });
});

describe('a LevelDB killed while it compacts', () => {
  it('loses nothing and keeps nothing deleted: SIGKILLed mid-compaction three times, each reopen holds exactly one whole round', async () => {
    await using dir = await tempDir();
    let last = 0;
    for (let life = 0; life < 3; life++) {
      const child = spawn(process.execPath, ['--import', 'tsx', WRITER, dir.path], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      // Killed once its compactions ran a while: a kill lands mid-compaction or between them.
      const printed = await new Promise<number>((resolve, reject) => {
        let out = '';
        child.stdout.setEncoding('utf8').on('data', (d: string) => {
          out += d;
          const rounds = [...out.matchAll(/^round (\d+) (\d+)$/gm)];
          const newest = rounds.at(-1);
          if (newest && Number(newest[2]) >= 20 + life * 7) resolve(Number(newest[1]));
        });
        child.once('exit', (code) => reject(new Error(`writer exited ${code}: ${stderr}`)));
      });
      child.kill('SIGKILL');
      await exited;
      await using storage = await levelStorage({ path: dir.path, compactAfterDeletes: 0 });
      const byRound = new Map<string, number>();
      for await (const [key] of storage.entries({ gte: 'round:', lt: 'round:\uffff' })) {
        const round = key.split(':')[1]!;
        byRound.set(round, (byRound.get(round) ?? 0) + 1);
      }
      expect([...byRound.values()]).toEqual([200]);
      const round = Number([...byRound.keys()][0]);
      expect(round).toBeGreaterThanOrEqual(printed);
      expect(round).toBeGreaterThan(last);
      last = round;
    }
  });
});

describe('troupe db compact', () => {
  it('compacts a LevelDB directory no process holds and reports its size before and after', async () => {
    await using dir = await tempDir();
    {
      await using storage = await levelStorage({ path: dir.path, compactAfterDeletes: 0 });
      await writeThenDeleteAll(storage);
    }
    const { code, stdout } = await runTroupe(['db', 'compact', '--db', dir.path, '--json']);
    expect(code).toBe(0);
    const { compact } = JSON.parse(stdout) as { compact: { bytesBefore: number; bytesAfter: number } };
    expect(compact.bytesAfter).toBeLessThan(1 * MiB);
    expect(compact.bytesBefore).toBeGreaterThan(compact.bytesAfter);
  });

  it('fails with STORAGE_NOT_FOUND for a missing database and creates nothing, and refuses a Postgres url', async () => {
    await using dir = await tempDir();
    const missing = join(dir.path, 'nothing-here');
    const { code, stdout } = await runTroupe(['db', 'compact', '--db', missing, '--json']);
    expect(code).not.toBe(0);
    expect(JSON.parse(stdout).error.code).toBe('STORAGE_NOT_FOUND');
    await expect(stat(missing)).rejects.toThrow(/ENOENT/);
    const pg = await runTroupe(['db', 'compact', '--db', 'postgres://127.0.0.1/test']);
    expect(pg.code).not.toBe(0);
    expect(pg.stderr).toMatch(/autovacuum/);
  });
});
