import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll } from 'vitest';

/**
 * Where the test Postgres server is: `TROUPE_TEST_POSTGRES` (a server URL without a
 * database), by default the machine's server on 127.0.0.1 with trust authentication.
 */
export const POSTGRES_SERVER = process.env.TROUPE_TEST_POSTGRES ?? 'postgres://root@127.0.0.1:5432';

/** A database of its own for a test file: created empty, dropped (connections and all) on dispose. */
export interface TestDatabase extends AsyncDisposable {
  readonly name: string;
  /** The connection string of the database. */
  readonly url: string;
}

const admin = async <T>(work: (client: pg.Client) => Promise<T>): Promise<T> => {
  const client = new pg.Client({ connectionString: `${POSTGRES_SERVER}/postgres` });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
};

/**
 * Creates a database with a random name. A server that does not answer fails the test:
 * Postgres tests are never skipped (`.ci/run` starts the server).
 */
export async function testDatabase(): Promise<TestDatabase> {
  const name = `troupe_test_${randomBytes(6).toString('hex')}`;
  await admin((client) => client.query(`CREATE DATABASE ${name} ENCODING 'UTF8' TEMPLATE template0`));
  return {
    name,
    url: `${POSTGRES_SERVER}/${name}`,
    [Symbol.asyncDispose]: () => admin((client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => {}),
  };
}

/** The database of a test file, with a way to look at it in plain SQL. */
export interface FileDatabase {
  /** Its connection string (read it inside a test or hook: it exists from `beforeAll` on). */
  readonly url: string;
  /** Runs one query on a connection of its own and returns the rows. */
  sql<T extends pg.QueryResultRow = pg.QueryResultRow>(query: string, params?: unknown[]): Promise<T[]>;
}

/** A fresh database for the calling test file: created before its tests, dropped after them. */
export function useTestDatabase(): FileDatabase {
  let db: TestDatabase | undefined;
  beforeAll(async () => {
    db = await testDatabase();
  });
  afterAll(async () => {
    await db?.[Symbol.asyncDispose]();
  });
  const url = () => {
    if (!db) throw new TypeError('the test database exists from beforeAll on');
    return db.url;
  };
  return {
    get url() {
      return url();
    },
    async sql<T extends pg.QueryResultRow>(query: string, params: unknown[] = []) {
      const client = new pg.Client({ connectionString: url() });
      await client.connect();
      try {
        return (await client.query<T>(query, params)).rows;
      } finally {
        await client.end();
      }
    },
  };
}
