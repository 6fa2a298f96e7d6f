import { randomBytes } from 'node:crypto';
import pg from 'pg';

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
