import { randomBytes } from 'node:crypto';
import pg from 'pg';

/**
 * The Postgres server of the tests and benchmarks, and databases of their own on it. Apart
 * from ./postgres.ts (the vitest hooks) so that a benchmark run by plain Node can use it too.
 */

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

/** Where to create a {@link testDatabase}. */
export interface TestDatabaseOptions {
  /** The server's URL, without a database. Default {@link POSTGRES_SERVER}. */
  server?: string;
  /** The start of its random name. Default `troupe_test`. */
  prefix?: string;
}

const admin = async <T>(server: string, work: (client: pg.Client) => Promise<T>): Promise<T> => {
  const client = new pg.Client({ connectionString: `${server}/postgres` });
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
export async function testDatabase(options: TestDatabaseOptions = {}): Promise<TestDatabase> {
  const server = (options.server ?? POSTGRES_SERVER).replace(/\/+$/, '');
  const prefix = options.prefix ?? 'troupe_test';
  if (!/^[a-z_][a-z0-9_]*$/.test(prefix)) throw new TypeError(`a database name prefix is lower-case letters, digits and _, got ${JSON.stringify(prefix)}`);
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
  await admin(server, (client) => client.query(`CREATE DATABASE ${name} ENCODING 'UTF8' TEMPLATE template0`));
  return {
    name,
    url: `${server}/${name}`,
    [Symbol.asyncDispose]: () => admin(server, (client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => {}),
  };
}
