import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import pg from 'pg';
import { processAlive } from '../../storage/process-alive.js';

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

/** Who created a test database: a process of this machine, which drops it when done. */
const creatorMark = `troupe-test host=${hostname()} pid=${process.pid}`;
const MARK = /^troupe-test host=(\S+) pid=(\d+)$/;

const alive = processAlive;

/** Per server, the one sweep of this process (see {@link sweepAbandoned}). */
const swept: Record<string, Promise<void>> = {};

/**
 * Drops the test databases a process of this machine created and can no longer drop: it was
 * killed (a benchmark interrupted, a test run past its time limit). A database of a live
 * process, of another machine or without the mark is left alone.
 */
async function sweepAbandoned(server: string): Promise<void> {
  const { rows } = await admin(server, (client) =>
    client.query<{ name: string; mark: string | null }>("SELECT datname AS name, shobj_description(oid, 'pg_database') AS mark FROM pg_database WHERE datname LIKE 'troupe\\_%'"),
  );
  for (const { name, mark } of rows) {
    const match = MARK.exec(mark ?? '');
    if (!match || match[1] !== hostname() || alive(Number(match[2])) || !/^[a-z_][a-z0-9_]*$/.test(name)) continue;
    await admin(server, (client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).catch(() => {});
  }
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
  await (swept[server] ??= sweepAbandoned(server).catch(() => {}));
  await admin(server, async (client) => {
    await client.query(`CREATE DATABASE ${name} ENCODING 'UTF8' TEMPLATE template0`);
    await client.query(`COMMENT ON DATABASE ${name} IS '${creatorMark}'`);
  });
  return {
    name,
    url: `${server}/${name}`,
    [Symbol.asyncDispose]: () => admin(server, (client) => client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => {}),
  };
}
