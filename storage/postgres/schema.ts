import type { PoolClient } from 'pg';
import { ErrorCode, TroupeError } from '../../core/errors.js';

/**
 * The Postgres schema of `troupe/storage/postgres` and its migrations. The schema has its
 * own version, kept in `troupe_schema` (one row per migration applied), separate from the
 * key layout's (`meta:layout`, core/layout.ts), which lives in the key-value table like on
 * LevelDB.
 * @module
 */

/** One step of the schema. Never edit a released one: add the next. */
interface Migration {
  version: number;
  description: string;
  sql: string;
}

const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'key-value table, run claims (leases), runs and approvals readable with SQL',
    sql: `
      -- COLLATE "C" on a UTF8 database compares keys byte by byte: the order of the Storage contract.
      CREATE TABLE troupe_kv (
        key text COLLATE "C" PRIMARY KEY,
        value bytea NOT NULL
      );
      -- One row per run ever claimed or recorded. expires_at NULL: released (or never claimed).
      CREATE TABLE troupe_claims (
        run_id text COLLATE "C" PRIMARY KEY,
        owner text,
        epoch bigint NOT NULL DEFAULT 0,
        expires_at timestamptz,
        claimed_at timestamptz
      );
      -- A projection of the run index records (run:<id>), kept in the transaction that writes them.
      CREATE TABLE troupe_runs (
        run_id text COLLATE "C" PRIMARY KEY,
        crew text NOT NULL,
        version text,
        status text NOT NULL,
        owner text,
        epoch bigint,
        part_of text,
        started_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        checkpoint bigint NOT NULL,
        resumes integer NOT NULL,
        source text,
        input text,
        output text,
        error jsonb,
        forked_from text
      );
      CREATE INDEX troupe_runs_unfinished ON troupe_runs (started_at) WHERE status IN ('running', 'waiting') AND part_of IS NULL;
      -- A projection of the approval records (approval:<id>).
      CREATE TABLE troupe_approvals (
        approval_id text COLLATE "C" PRIMARY KEY,
        run_id text NOT NULL,
        agent_id text NOT NULL,
        tool text NOT NULL,
        call_id text NOT NULL,
        reason text NOT NULL,
        status text NOT NULL,
        message text,
        decision text,
        created_at timestamptz NOT NULL,
        decided_at timestamptz
      );
      CREATE INDEX troupe_approvals_run ON troupe_approvals (run_id);
      -- Who executes what, for a person: a run, its lease holder, and whether the lease is live.
      CREATE VIEW troupe_run_leases AS
        SELECT r.run_id, r.crew, r.status, c.owner AS holder, c.epoch, c.expires_at AS lease_expires_at,
               (c.expires_at IS NOT NULL AND c.expires_at > clock_timestamp()) AS lease_live
          FROM troupe_runs r LEFT JOIN troupe_claims c USING (run_id);
    `,
  },
  {
    version: 2,
    description: 'mail waiting for runs, readable with SQL',
    sql: `
      -- Rows of mail between runs (inq:<run>:<sender>:<seq>:<n>, core/layout.ts): what waits for which run.
      CREATE VIEW troupe_mail AS
        SELECT split_part(key, ':', 2) AS run_id, split_part(key, ':', 3) AS sender, key, octet_length(value) AS bytes
          FROM troupe_kv WHERE key >= 'inq:' AND key < 'inq;';
    `,
  },
];

/** The newest schema version this code knows. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

/** The tables and views the newest schema has: a database that lacks one is damaged. */
const OBJECTS = ['troupe_kv', 'troupe_claims', 'troupe_runs', 'troupe_approvals', 'troupe_run_leases', 'troupe_mail'];

// Any constant will do, as long as every Troupe agrees on it: it serialises migrations
// of one database between nodes that start at once.
const MIGRATION_LOCK = 0x7472_6f75_7065;

/**
 * Brings the schema of the database `client` is connected to up to {@link SCHEMA_VERSION}
 * (when `create`), in one transaction under an advisory lock, so nodes starting together
 * migrate once. Refuses, changing nothing: a schema newer than this code (`STORAGE_VERSION`);
 * Troupe tables without their version, or a version whose tables are missing
 * (`STORAGE_CORRUPT`); no schema at all when not `create` (`STORAGE_NOT_FOUND`).
 */
export async function migrate(client: PoolClient, location: string, create: boolean): Promise<number> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    const present = await existing(client);
    let version = 0;
    if (present.has('troupe_schema')) {
      const { rows } = await client.query<{ version: number | null }>('SELECT max(version)::int AS version FROM troupe_schema');
      version = rows[0]?.version ?? 0;
    } else if (OBJECTS.some((name) => present.has(name))) {
      throw new TroupeError(ErrorCode.STORAGE_CORRUPT, `database at ${location} has Troupe tables but no troupe_schema table saying which version they are; nothing was changed`, {
        details: { location, found: OBJECTS.filter((name) => present.has(name)) },
      });
    }
    if (version > SCHEMA_VERSION) {
      throw new TroupeError(
        ErrorCode.STORAGE_VERSION,
        `database at ${location} has Troupe schema version ${version}, newer than this Troupe knows (${SCHEMA_VERSION}); upgrade Troupe on this machine. Nothing was read or written`,
        { retryable: false, details: { location, version, known: SCHEMA_VERSION } },
      );
    }
    if (version < SCHEMA_VERSION && !create) {
      if (version === 0) throw new TroupeError(ErrorCode.STORAGE_NOT_FOUND, `no Troupe database at ${location} (no troupe_schema table)`, { details: { location } });
      throw new TroupeError(ErrorCode.STORAGE_VERSION, `database at ${location} has Troupe schema version ${version}, older than ${SCHEMA_VERSION}; start a node on it to migrate it`, {
        details: { location, version, known: SCHEMA_VERSION },
      });
    }
    const missing = version === SCHEMA_VERSION ? OBJECTS.filter((name) => !present.has(name)) : [];
    if (missing.length > 0) {
      throw new TroupeError(ErrorCode.STORAGE_CORRUPT, `database at ${location} is damaged: schema version ${version} is recorded but ${missing.join(', ')} missing; nothing was changed`, {
        details: { location, version, missing },
      });
    }
    if (version < SCHEMA_VERSION) {
      await client.query('CREATE TABLE IF NOT EXISTS troupe_schema (version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
      for (const migration of MIGRATIONS.filter((m) => m.version > version)) {
        await client.query(migration.sql);
        await client.query('INSERT INTO troupe_schema (version, description) VALUES ($1, $2)', [migration.version, migration.description]);
      }
    }
    await client.query('COMMIT');
    return SCHEMA_VERSION;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  }
}

/** Which of Troupe's tables and views exist in the current schema search path. */
async function existing(client: PoolClient): Promise<Set<string>> {
  const names = ['troupe_schema', ...OBJECTS];
  const { rows } = await client.query<{ name: string; found: string | null }>('SELECT name, to_regclass(name)::text AS found FROM unnest($1::text[]) AS name', [names]);
  return new Set(rows.filter((r) => r.found !== null).map((r) => r.name));
}
