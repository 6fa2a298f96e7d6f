import { ErrorCode, TroupeError } from './errors.js';
import { CHECKPOINT_SCHEMA_VERSION, type Checkpoint } from './run-store.js';

/**
 * Upgrades a persisted snapshot from one machine version to the next. Register a chain of
 * them on the crew (`crew({ version: '3', migrations: [...] })`); on load, a checkpoint of an
 * older version is walked up the chain before it is restored.
 */
export interface Migration {
  from: string;
  to: string;
  /** Receives the persisted root snapshot (a plain object) and returns the upgraded one. */
  migrate(snapshot: unknown): unknown;
}

/** Throws a `TypeError` if `migrations` contain duplicates or a cycle. */
export function assertMigrations(owner: string, migrations: readonly Migration[]): void {
  const from = new Set<string>();
  for (const m of migrations) {
    if (typeof m.migrate !== 'function' || !m.from || !m.to) throw new TypeError(`${owner}: a migration needs from, to and migrate()`);
    if (from.has(m.from)) throw new TypeError(`${owner}: two migrations start at version "${m.from}"`);
    from.add(m.from);
  }
  for (const start of migrations) {
    const seen = new Set([start.from]);
    let next = migrations.find((m) => m.from === start.to);
    while (next) {
      if (seen.has(next.from)) throw new TypeError(`${owner}: migrations form a cycle through version "${next.from}"`);
      seen.add(next.from);
      next = migrations.find((m) => m.from === next!.to);
    }
  }
}

/**
 * Returns `checkpoint` upgraded to `target`, or throws `SNAPSHOT_VERSION` when it was written
 * by a newer schema or a version no migration chain reaches. Never modifies the input.
 */
export function upgradeCheckpoint(checkpoint: Checkpoint, target: { id: string; version: string }, migrations: readonly Migration[]): Checkpoint {
  const describe = `${checkpoint.machine.id}@${checkpoint.machine.version} (schema ${checkpoint.schemaVersion})`;
  if (checkpoint.schemaVersion > CHECKPOINT_SCHEMA_VERSION) {
    throw new TroupeError(ErrorCode.SNAPSHOT_VERSION, `checkpoint was written by a newer Troupe: ${describe}; this code reads schema ${CHECKPOINT_SCHEMA_VERSION}`, {
      details: { machine: checkpoint.machine, schemaVersion: checkpoint.schemaVersion },
    });
  }
  if (checkpoint.machine.version === target.version) return checkpoint;
  let snapshot = checkpoint.snapshot;
  let version = checkpoint.machine.version;
  const path: string[] = [version];
  while (version !== target.version) {
    const step = migrations.find((m) => m.from === version);
    if (!step) {
      throw new TroupeError(
        ErrorCode.SNAPSHOT_VERSION,
        `checkpointed by ${describe}; this code is ${target.id}@${target.version} and no migration leads from version "${version}" to it`,
        { details: { machine: checkpoint.machine, target, path } },
      );
    }
    snapshot = step.migrate(structuredClone(snapshot));
    version = step.to;
    path.push(version);
  }
  return { ...checkpoint, snapshot, machine: { id: target.id, version } };
}
