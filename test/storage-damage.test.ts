import { createHash } from 'node:crypto';
import { cp, readdir, readFile, stat, truncate, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { beforeAll, describe, expect, it } from 'vitest';
import { createNode, scriptedModel } from '../index.js';
import { isTroupeError } from '../core/errors.js';
import { levelStorage } from '../storage/level.js';
import { runTroupe } from './helpers/cli.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';
import { tempDir } from './helpers/temp.js';

/** sha256 of every file under `dir`, by relative path: the whole directory's content. */
async function hashes(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    out[relative(dir, path)] = createHash('sha256').update(await readFile(path)).digest('hex');
  }
  return out;
}

const tables = async (dir: string) => (await readdir(dir)).filter((f) => f.endsWith('.ldb')).sort();

/**
 * A LevelDB with two completed runs (`r1`, `r2`) written by a real node, then compacted so
 * the data sits in `.ldb` table files and the write-ahead log is empty: reopening it
 * changes no table file.
 */
async function pristineDatabase(path: string): Promise<void> {
  {
    await using storage = await levelStorage({ path });
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript }) } });
    for (const runId of ['r1', 'r2']) await (await node.run(twoAgentCrew(), { input: 'brief me', runId })).result();
  }
  const db = new ClassicLevel(path);
  await db.open();
  await db.compactRange('\u0000', '\uffff');
  await db.close();
}

describe('a damaged database', () => {
  let pristine: { path: string } & AsyncDisposable;
  beforeAll(async () => {
    pristine = await tempDir('troupe-pristine-');
    await pristineDatabase(join(pristine.path, 'db'));
    expect(await tables(join(pristine.path, 'db'))).not.toHaveLength(0);
    return () => pristine[Symbol.asyncDispose]();
  });

  /** A copy of the pristine database, damaged by `damage`, in its own temp dir. */
  async function damaged(damage: (db: string) => Promise<void>) {
    const dir = await tempDir('troupe-damaged-');
    const db = join(dir.path, 'db');
    await cp(join(pristine.path, 'db'), db, { recursive: true });
    await damage(db);
    return { dir, db };
  }

  const removeCurrent = (db: string) => unlink(join(db, 'CURRENT'));
  const manifestOf = async (db: string) => (await readFile(join(db, 'CURRENT'), 'utf8')).trim();

  it('with CURRENT missing: every command fails with STORAGE_CORRUPT and no file changes (the read commands used to wipe it)', async () => {
    const { dir, db } = await damaged(removeCurrent);
    await using _ = dir;
    const before = await hashes(db);
    const commands = [
      ['runs'],
      ['approvals'],
      ['history', 'r1'],
      ['audit', 'verify'],
      ['resume', 'r1'],
      ['approve', 'no-such-approval'],
      ['fork', 'r1', '--at', '1'],
      // Even the command that may create a database does not create one over these files.
      ['run', 'examples/research-crew.ts'],
    ];
    // In parallel: each is refused before LevelDB opens, so none waits for another's lock.
    const results = await Promise.all(commands.map((command) => runTroupe([...command, '--db', db], { TROUPE_SCRIPTED_LATENCY_MS: '0' })));
    results.forEach(({ code, stdout, stderr }, i) => {
      // `run` says what it loads before it opens the database; nothing else reaches stdout.
      const said = commands[i]![0] === 'run' ? `loading ${commands[i]![1]}…` : '';
      expect({ command: commands[i], code, stdout }).toEqual({ command: commands[i], code: 1, stdout: said });
      expect(stderr).toContain(`[STORAGE_CORRUPT] database at ${db} is damaged: CURRENT is missing`);
      expect(stderr).toContain(`troupe db repair --db ${db}`);
    });
    expect(await hashes(db)).toEqual(before);
  });

  it.each([
    ['the MANIFEST that CURRENT names is missing', async (db: string) => unlink(join(db, await manifestOf(db))), /CURRENT names MANIFEST-\d+, which is missing/],
    ['CURRENT holds garbage', (db: string) => writeFile(join(db, 'CURRENT'), 'not a manifest name'), /CURRENT does not name a MANIFEST file/],
    ['CURRENT names a file that is not there', (db: string) => writeFile(join(db, 'CURRENT'), 'MANIFEST-999999\n'), /CURRENT names MANIFEST-999999, which is missing/],
    ['a table file is missing', async (db: string) => unlink(join(db, (await tables(db))[0]!)), /Corruption: 1 missing files; e\.g\.: .*\.ldb/],
  ])('when %s: `troupe runs` exits 1 with STORAGE_CORRUPT naming the cause, and every file stays byte-identical', async (_what, damage, cause) => {
    const { dir, db } = await damaged(damage);
    await using _ = dir;
    const before = await hashes(db);
    const { code, stdout, stderr } = await runTroupe(['runs', '--db', db]);
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toMatch(/\[STORAGE_CORRUPT\] database at .* is damaged: /);
    expect(stderr).toMatch(cause);
    expect(stderr).toContain(db);
    expect(stderr).toContain('troupe db repair');
    // LevelDB itself rotates LOG and creates LOCK on a failed open; those are put back too.
    expect(await hashes(db)).toEqual(before);
  });

  it('with a truncated table file: the read fails with STORAGE_CORRUPT and no table file is changed or deleted', async () => {
    const { dir, db } = await damaged(async (path) => {
      const [table] = await tables(path);
      await truncate(join(path, table!), Math.floor((await stat(join(path, table!))).size / 2));
    });
    await using _ = dir;
    const before = await hashes(db);
    const { code, stdout, stderr } = await runTroupe(['runs', '--db', db]);
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toMatch(/\[STORAGE_CORRUPT\] database at .* is damaged: reading it failed with "IO error: .*\.ldb/);
    expect(stderr).toContain('troupe db repair');
    // The metadata checks out, so LevelDB opened it, and an open always starts a new manifest
    // and log; the data files are what must survive untouched.
    const after = await hashes(db);
    const tableHashes = (h: Record<string, string>) => Object.fromEntries(Object.entries(h).filter(([f]) => f.endsWith('.ldb')));
    expect(tableHashes(after)).toEqual(tableHashes(before));
  });

  it('`troupe db repair` backs the directory up next to it, then makes a CURRENT-less database readable again', async () => {
    const { dir, db } = await damaged(removeCurrent);
    await using _ = dir;
    const damagedFiles = await hashes(db);
    const repaired = await runTroupe(['db', 'repair', '--db', db]);
    expect(repaired.stderr).toBe('');
    expect(repaired.code).toBe(0);
    const backup = /^backed up .* to (.+)$/m.exec(repaired.stdout)?.[1];
    expect(backup).toBeDefined();
    expect(dirname(backup!)).toBe(dirname(db));
    expect(basename(backup!)).toMatch(/^db\.backup-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$/);
    // The backup is the damaged directory as it was before repair touched it.
    expect(await hashes(backup!)).toEqual(damagedFiles);
    expect(repaired.stdout).toMatch(/repaired .*: 2 runs readable \(2 completed\)/);

    const listed = await runTroupe(['runs', '--db', db, '--json']);
    expect(listed.code).toBe(0);
    expect((JSON.parse(listed.stdout) as { runs: Array<{ id: string; status: string }> }).runs.map((r) => [r.id, r.status]).sort()).toEqual([
      ['r1', 'completed'],
      ['r2', 'completed'],
    ]);
  });
});

describe('a missing database', () => {
  it('read commands fail with STORAGE_NOT_FOUND naming the path and create no directory (they used to create an empty database)', async () => {
    await using dir = await tempDir();
    const db = join(dir.path, 'nowhere', 'db');
    const commands = [['runs'], ['approvals'], ['history', 'x'], ['audit', 'verify'], ['resume', 'x'], ['approve', 'x'], ['fork', 'x', '--at', '1'], ['inspect', '--port', '0'], ['db', 'repair']];
    const results = await Promise.all(commands.map((command) => runTroupe([...command, '--db', db])));
    results.forEach(({ code, stderr }, i) => {
      expect({ command: commands[i], code }).toEqual({ command: commands[i], code: 1 });
      expect(stderr).toContain(`[STORAGE_NOT_FOUND] no database at ${db} (the directory does not exist)`);
    });
    expect(await readdir(dir.path)).toEqual([]);
  });

  it('an empty directory is not a database to a read command, and stays empty', async () => {
    await using dir = await tempDir();
    const { code, stderr } = await runTroupe(['runs', '--db', dir.path]);
    expect(code).toBe(1);
    expect(stderr).toContain(`[STORAGE_NOT_FOUND] no database at ${dir.path} (the directory is empty)`);
    expect(await readdir(dir.path)).toEqual([]);
  });
});

describe('levelStorage on a directory that already holds files', () => {
  it('never creates a database over them, even with create allowed', async () => {
    await using dir = await tempDir();
    await writeFile(join(dir.path, 'notes.txt'), 'mine');
    const refused = await levelStorage({ path: dir.path }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isTroupeError(refused, 'STORAGE_FAILED') && (refused as Error).message).toMatch(/holds files that are not a LevelDB database; refusing to create one/);
    expect(await readdir(dir.path)).toEqual(['notes.txt']);
  });
});
