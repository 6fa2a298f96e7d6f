import { afterEach, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createNode, scriptedModel } from '../index.js';
import { postgresStorage, SCHEMA_VERSION } from '../storage/postgres/index.js';
import { failure } from './helpers/failure.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';
import { storageConformance } from '../testing.js';
import { useTestDatabase } from './helpers/postgres.js';

const db = useTestDatabase();

const sql = db.sql;
/** Drops Troupe's tables: each case starts from a database without them. */
const clear = () => sql('DROP VIEW IF EXISTS troupe_run_leases, troupe_mail; DROP TABLE IF EXISTS troupe_kv, troupe_claims, troupe_runs, troupe_approvals, troupe_schema CASCADE');

storageConformance({ describe, it, afterEach }, 'Postgres', async () => {
  await clear();
  return {
    storage: await postgresStorage({ connectionString: db.url }),
    reopen: () => postgresStorage({ connectionString: db.url }),
    cleanup: async () => {},
  };
});

describe('the Postgres schema', () => {
  it('creates its tables at the newest version on a fresh database, and opens them again unchanged', async () => {
    await clear();
    await (await postgresStorage({ connectionString: db.url })).close();
    const applied = await sql<{ version: number }>('SELECT version FROM troupe_schema ORDER BY version');
    expect(applied.map((r) => r.version)).toEqual(Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1));
    await using again = await postgresStorage({ connectionString: db.url });
    await again.write([{ type: 'put', key: 'k', value: new Uint8Array([1]) }]);
    expect(await sql('SELECT count(*)::int AS n FROM troupe_schema')).toEqual([{ n: SCHEMA_VERSION }]);
  });

  it('migrates a version 1 database to the newest version, keeping its data', async () => {
    await clear();
    {
      await using storage = await postgresStorage({ connectionString: db.url });
      await storage.write([{ type: 'put', key: 'inq:r1:r2:000000000001:0000', value: new Uint8Array([7, 7]) }]);
    }
    // What a database of the first release looks like.
    await sql('DROP VIEW troupe_mail; DELETE FROM troupe_schema WHERE version > 1');
    expect((await failure(postgresStorage({ connectionString: db.url, create: false }))).code).toBe('STORAGE_VERSION');
    await using storage = await postgresStorage({ connectionString: db.url });
    expect(await sql('SELECT max(version)::int AS v FROM troupe_schema')).toEqual([{ v: SCHEMA_VERSION }]);
    expect(await sql('SELECT run_id, sender, bytes FROM troupe_mail')).toEqual([{ run_id: 'r1', sender: 'r2', bytes: 2 }]);
    expect(await storage.get('inq:r1:r2:000000000001:0000')).toEqual(Buffer.from([7, 7]));
  });

  it('refuses a schema newer than it knows, reading and writing nothing', async () => {
    await clear();
    await (await postgresStorage({ connectionString: db.url })).close();
    await sql(`INSERT INTO troupe_schema (version, description) VALUES (${SCHEMA_VERSION + 1}, 'from a newer Troupe')`);
    const refused = await failure(postgresStorage({ connectionString: db.url }));
    expect(refused.code).toBe('STORAGE_VERSION');
    expect(refused.message).toMatch(new RegExp(`schema version ${SCHEMA_VERSION + 1}, newer than this Troupe knows \\(${SCHEMA_VERSION}\\)`));
    expect(await sql('SELECT max(version)::int AS v FROM troupe_schema')).toEqual([{ v: SCHEMA_VERSION + 1 }]);
  });

  it('creates nothing for a reader (create: false) and reports tables without their version as damaged', async () => {
    await clear();
    expect((await failure(postgresStorage({ connectionString: db.url, create: false }))).code).toBe('STORAGE_NOT_FOUND');
    expect(await sql(`SELECT to_regclass('troupe_schema')::text AS t`)).toEqual([{ t: null }]);
    await (await postgresStorage({ connectionString: db.url })).close();
    await sql('DROP TABLE troupe_schema');
    const damaged = await failure(postgresStorage({ connectionString: db.url }));
    expect(damaged.code).toBe('STORAGE_CORRUPT');
    expect(await sql(`SELECT to_regclass('troupe_schema')::text AS t`)).toEqual([{ t: null }]);
  });

  it('leaves a pool passed in open, and closes the one it opened', async () => {
    await clear();
    const pool = new pg.Pool({ connectionString: db.url, max: 3 });
    const storage = await postgresStorage({ pool });
    await storage.close();
    expect((await pool.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await pool.end();
    await expect(postgresStorage({ connectionString: db.url, pool } as never)).rejects.toThrow(TypeError);
  });
});

describe('runs and approvals readable with SQL', () => {
  it('projects run records and approvals into troupe_runs and troupe_approvals in the transaction that writes them', async () => {
    await clear();
    await using storage = await postgresStorage({ connectionString: db.url });
    const approvals = await import('./fixtures/approval-crew.js');
    const first = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript }) }, nodeId: 'n1' });
    expect(await (await first.run(twoAgentCrew(), { input: 'brief me', runId: 'pair-1' })).result()).toMatchObject({ status: 'completed' });
    await first.close();
    const [run] = await sql('SELECT run_id, crew, status, owner, output, checkpoint > 0 AS checkpointed FROM troupe_runs');
    expect(run).toEqual({ run_id: 'pair-1', crew: 'pair', status: 'completed', owner: expect.stringMatching(/^n1\./), output: 'final: a brief about actor and state', checkpointed: true });

    await using node = await createNode({ storage, models: approvals.models, nodeId: 'n1', crews: [approvals.default], resume: false });
    const waiting = await node.run(approvals.default, { input: approvals.input, runId: 'ask-1' });
    // In a cluster a run waiting for a human holds no lease: whoever decides takes it.
    await expect.poll(async () => (await sql(`SELECT 1 FROM troupe_run_leases WHERE run_id = 'ask-1' AND status = 'waiting' AND NOT lease_live`)).length).toBe(1);
    const [pending] = await sql(`SELECT r.status AS run_status, a.approval_id, a.tool, a.status FROM troupe_approvals a JOIN troupe_runs r USING (run_id) WHERE a.run_id = 'ask-1'`);
    expect(pending).toMatchObject({ run_status: 'waiting', tool: 'publish', status: 'pending' });
    await node.approve(pending!.approval_id as string);
    expect(await waiting.result()).toMatchObject({ output: approvals.PUBLISHED });
    expect(await sql(`SELECT status, decision FROM troupe_approvals WHERE run_id = 'ask-1'`)).toEqual([{ status: 'approved', decision: 'approve' }]);
    expect(await sql(`SELECT run_id, status, holder, lease_live FROM troupe_run_leases ORDER BY run_id`)).toEqual([
      { run_id: 'ask-1', status: 'completed', holder: expect.stringMatching(/^n1\./), lease_live: false },
      { run_id: 'pair-1', status: 'completed', holder: expect.stringMatching(/^n1\./), lease_live: false },
    ]);
  });
});

describe('keys on Postgres', () => {
  it('orders keys as UTF-8 bytes, as LevelDB does, whatever the database collation would say', async () => {
    await clear();
    await using storage = await postgresStorage({ connectionString: db.url });
    const keys = ['k:Z', 'k:a', 'k:é', 'k:z', 'k:\u{1F600}', 'k:\uffff'];
    await storage.write(keys.map((key) => ({ type: 'put' as const, key, value: new Uint8Array([1]) })));
    const seen: string[] = [];
    for await (const [key] of storage.entries({ gte: 'k:', lt: 'k;' })) seen.push(key);
    const bytes = (k: string) => Buffer.from(k, 'utf8');
    expect(seen).toEqual([...keys].sort((a, b) => Buffer.compare(bytes(a), bytes(b))));
    expect(seen).toEqual(['k:Z', 'k:a', 'k:z', 'k:é', 'k:\uffff', 'k:\u{1F600}']);
  });

  it('refuses, with a TypeError and nothing written, a key Postgres text cannot hold', async () => {
    await clear();
    await using storage = await postgresStorage({ connectionString: db.url });
    await expect(storage.write([{ type: 'put', key: 'ok', value: new Uint8Array([1]) }, { type: 'put', key: 'nul\u0000', value: new Uint8Array([1]) }])).rejects.toThrow(/U\+0000/);
    expect(await storage.get('ok')).toBeUndefined();
  });
});

describe('the LISTEN connection', () => {
  const terminateListeners = () => sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()");

  it('is listened on again after the server ends it, and the process survives the server ending it after close', async () => {
    await clear();
    const storage = await postgresStorage({ connectionString: db.url });
    const heard: string[] = [];
    storage.shared!.onMail!((runId) => heard.push(runId));
    await expect.poll(async () => (await sql("SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"))[0]!.n).toBe(1);
    await terminateListeners();
    // Listening again within a second or so: a notification sent then is heard.
    await expect
      .poll(
        async () => {
          await sql("SELECT pg_notify('troupe_mail', 'r-after')");
          return heard.includes('r-after');
        },
        { timeout: 10_000, interval: 200 },
      )
      .toBe(true);
    await storage.close();
    // Ended by the server once more, now that the storage gave it back: nothing may throw.
    await terminateListeners();
    await sql('SELECT 1');
    expect(storage.status).toBe('closed');
  });
});
