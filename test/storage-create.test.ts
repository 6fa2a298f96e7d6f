import { spawn } from 'node:child_process';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { levelStorage } from '../storage/level.js';
import { watchLines } from './helpers/lines.js';
import { tempDir } from './helpers/temp.js';

/**
 * Creating a LevelDB database is all or nothing: LevelDB writes its first manifest before
 * CURRENT, and a process killed between the two used to leave a directory every later open
 * refused as damaged (the crash trials found one). Now a database is made beside its path and
 * renamed into place.
 */

const CREATOR = fileURLToPath(new URL('./fixtures/creating-databases.ts', import.meta.url));

/** Starts the creator in `dir`, SIGKILLs it once it printed `created <after>`, and says how far it got. */
async function createThenKill(dir: string, after: number): Promise<number> {
  const child = spawn(process.execPath, ['--import', 'tsx', CREATOR, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  // 'close', not 'exit': every line it printed has been read by then.
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const out = watchLines(child.stdout, exited, () => `creator printed ${out.lines.join(' | ')}; stderr: ${stderr}`);
  await out.waitFor(new RegExp(`^created ${after}$`));
  // Mid-way through the creation after the last one it printed, wherever that had got to.
  child.kill('SIGKILL');
  await exited;
  return Math.max(...out.lines.map((line) => Number(/^created (\d+)$/.exec(line)?.[1] ?? -1)));
}

describe('creating a LevelDB database', () => {
  it('leaves nothing or a whole database at the path when the process is SIGKILLed during creation, never a damaged one', async () => {
    await using dir = await tempDir();
    let next = 0;
    for (let round = 0; round < 6; round++) {
      const root = join(dir.path, `round-${round}`);
      await mkdir(root);
      const created = await createThenKill(root, 3 + round);
      next += created;
      const names = (await readdir(root)).filter((n) => n.startsWith('db-') && !n.includes('.creating-'));
      // Every one it reported is whole; the one it was making is whole or absent.
      for (let i = 0; i <= created; i++) expect(names).toContain(`db-${i}`);
      expect(names.length === created + 1 || names.length === created + 2).toBe(true);
      for (const name of names) {
        await using storage = await levelStorage({ path: join(root, name), create: false });
        expect(storage.status).toBe('open');
      }
      // The path it was killed creating can be created (or opened) now, and its scratch is gone.
      await using again = await levelStorage({ path: join(root, `db-${created + 1}`) });
      expect(again.status).toBe('open');
      expect((await readdir(root)).filter((n) => n.includes('.creating-'))).toEqual([]);
    }
    expect(next).toBeGreaterThan(0);
  });

  it('removes the half-made scratch directory of a dead process, and keeps that of a live one', async () => {
    await using dir = await tempDir();
    const path = join(dir.path, 'db');
    // What a creation killed between LevelDB's manifest and CURRENT leaves, beside the path.
    const dead = `${path}.creating-4194305-0badc0de`; // above Linux's pid_max: no such process
    const live = `${path}.creating-${process.ppid}-0badc0de`;
    for (const scratch of [dead, live]) {
      await mkdir(scratch);
      for (const file of ['LOCK', 'LOG', 'MANIFEST-000001']) await writeFile(join(scratch, file), '');
    }
    await using storage = await levelStorage({ path });
    await storage.write([{ type: 'put', key: 'k', value: Uint8Array.of(1) }]);
    expect([...(await storage.get('k'))!]).toEqual([1]);
    expect((await readdir(dir.path)).sort()).toEqual(['db', `db.creating-${process.ppid}-0badc0de`]);
  });

  it('creates into an empty directory that is already there, and refuses one that holds files', async () => {
    await using dir = await tempDir();
    const empty = join(dir.path, 'empty');
    await mkdir(empty);
    {
      await using storage = await levelStorage({ path: empty });
      await storage.write([{ type: 'put', key: 'k', value: Uint8Array.of(2) }]);
    }
    await using reopened = await levelStorage({ path: empty, create: false });
    expect([...(await reopened.get('k'))!]).toEqual([2]);
    const full = join(dir.path, 'full');
    await mkdir(full);
    await writeFile(join(full, 'notes.txt'), 'mine');
    await expect(levelStorage({ path: full })).rejects.toMatchObject({ code: 'STORAGE_FAILED' });
    expect(await readdir(full)).toEqual(['notes.txt']);
  });
});
