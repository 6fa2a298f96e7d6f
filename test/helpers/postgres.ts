import pg from 'pg';
import { afterAll, beforeAll } from 'vitest';
import { testDatabase, type TestDatabase } from './postgres-server.js';

export { POSTGRES_SERVER, testDatabase, type TestDatabase } from './postgres-server.js';

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
