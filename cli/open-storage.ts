/**
 * The one rule for what a command's `--db` names: a LevelDB directory, or a Postgres
 * database given as a `postgres://` (or `postgresql://`) URL. Every command opens its storage
 * here.
 * @module
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { InvalidArgumentError, Option } from 'commander';
import { ErrorCode, TroupeError } from '../core/errors.js';
import type { Storage } from '../core/storage.js';
import { DEFAULT_DB } from './hints.js';
import { wholeNumber } from './network.js';

/** Whether `db` names a Postgres database rather than a directory. */
export function isDatabaseUrl(db: string): boolean {
  return /^postgres(?:ql)?:\/\//.test(db);
}

/** How a command opens its storage. */
export interface OpenStorageOptions {
  /** Create a database (LevelDB) or Troupe's tables (Postgres) when there are none. */
  create: boolean;
  /** Postgres only: the lease of the runs this process claims, in ms. */
  leaseMs?: number;
}

/** What {@link leaseMsOption} gives a command's options. */
export interface LeaseFlags {
  leaseMs?: number;
}

/**
 * `--lease-ms`, one definition for every command that executes runs. On Postgres a process
 * that dies keeps its runs until their leases expire, so a short lease lets another process
 * take them over sooner, at the cost of more frequent heartbeats. On LevelDB the flag is
 * accepted and changes nothing: one process holds the database, and the claims end with it
 * (a killed process's lock is gone at once), so one command line works on both.
 */
export const leaseMsOption = () =>
  new Option('--lease-ms <ms>', 'on a postgres:// --db: how long a run this process executes stays claimed after its last heartbeat, i.e. how soon another process may take it over if this one dies (default 15000; no effect on LevelDB)').argParser(
    wholeNumber('--lease-ms', 100),
  );

/**
 * `--db <dir|url>`, one definition for every command that opens a LevelDB directory or a
 * Postgres database. Commands add {@link storageOption} beside it: the same option under the
 * name a cluster's operators look for (`troupe node --storage postgres://…`). Give one of
 * them; {@link resolveStorageFlag} folds `--storage` into `db` before the command runs.
 */
export const dbOption = (description = 'a LevelDB directory, or a postgres:// URL', fallback = DEFAULT_DB) => new Option('--db <dir|url>', description).default(fallback);

/** `--storage <dir|url>`: {@link dbOption} under the other name. */
export const storageOption = () => new Option('--storage <dir|url>', 'the same as --db (a postgres:// URL, or a LevelDB directory)');

/** Moves `--storage` into `--db` (a usage error when both name different places). */
export function resolveStorageFlag(opts: { db?: string; storage?: string }, usesDefault: boolean, setDb: (db: string) => void): void {
  if (opts.storage === undefined) return;
  if (!usesDefault && opts.db !== opts.storage) throw new InvalidArgumentError(`--db ${opts.db} and --storage ${opts.storage} name different databases: give one`);
  setDb(opts.storage);
}

/**
 * Opens the storage `db` names. `pg` is an optional peer dependency of Troupe: loaded only
 * for a URL, and named with how to install it when it is missing.
 */
export async function openStorage(db: string, options: OpenStorageOptions): Promise<Storage> {
  if (!isDatabaseUrl(db)) {
    const { levelStorage } = await import('../storage/level.js');
    return levelStorage({ path: db, create: options.create });
  }
  const postgres = await import('../storage/postgres/index.js').catch((error: unknown) => {
    if ((error as { code?: string })?.code === 'ERR_MODULE_NOT_FOUND' && /'pg'|"pg"/.test(String((error as Error).message))) {
      throw new TroupeError(ErrorCode.CONFIG_INVALID, 'a postgres:// --db needs the pg package, which is not installed: run `npm install pg`', { cause: error });
    }
    throw error;
  });
  return postgres.postgresStorage({ connectionString: db, create: options.create, ...(options.leaseMs !== undefined ? { leaseMs: options.leaseMs } : {}) });
}

/**
 * The node id a command's node takes: `--node-id` when given; on a database many processes
 * share, else one unique to this process (node ids are held there, and each names an audit
 * chain); else the default (`local`).
 */
export function nodeIdFor(storage: Storage, flag: string | undefined): string | undefined {
  return flag ?? (storage.shared ? processNodeId() : undefined);
}

function processNodeId(): string {
  const host = hostname().replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 40) || 'host';
  return `${host}-${process.pid}-${randomBytes(3).toString('hex')}`;
}
