import { ErrorCode, TroupeError } from './errors.js';
import type { CheckpointHead } from './checkpoints.js';
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
 * The migrations that take a checkpoint written by `head` to `target`, in order, or throws
 * `SNAPSHOT_VERSION` when it was written by a newer schema or a version no migration chain
 * reaches. Needs no snapshot, so a node can refuse a run before it claims or reads it.
 */
export function planUpgrade(head: Pick<CheckpointHead, 'schemaVersion' | 'machine'>, target: { id: string; version: string }, migrations: readonly Migration[]): Migration[] {
  const describe = `${head.machine.id}@${head.machine.version} (schema ${head.schemaVersion})`;
  if (head.schemaVersion > CHECKPOINT_SCHEMA_VERSION) {
    throw new TroupeError(ErrorCode.SNAPSHOT_VERSION, `checkpoint was written by a newer Troupe: ${describe}; this code reads schema ${CHECKPOINT_SCHEMA_VERSION}`, {
      details: { machine: head.machine, schemaVersion: head.schemaVersion },
    });
  }
  const steps: Migration[] = [];
  let version = head.machine.version;
  const path: string[] = [version];
  while (version !== target.version) {
    const step = migrations.find((m) => m.from === version);
    if (!step) {
      throw new TroupeError(
        ErrorCode.SNAPSHOT_VERSION,
        `checkpointed by ${describe}; this code is ${target.id}@${target.version} and no migration leads from version "${version}" to it`,
        { details: { machine: head.machine, target, path } },
      );
    }
    steps.push(step);
    version = step.to;
    path.push(version);
  }
  return steps;
}

/**
 * Returns `checkpoint` upgraded to `target`, or throws `SNAPSHOT_VERSION` (see
 * {@link planUpgrade}). Never modifies the input.
 */
export function upgradeCheckpoint(checkpoint: Checkpoint, target: { id: string; version: string }, migrations: readonly Migration[]): Checkpoint {
  const steps = planUpgrade(checkpoint, target, migrations);
  if (steps.length === 0) return checkpoint;
  let snapshot = checkpoint.snapshot;
  for (const step of steps) snapshot = step.migrate(structuredClone(snapshot));
  // A migrated snapshot holds new arrays: nothing of it may be taken as already logged.
  const { arrays: _arrays, ...rest } = checkpoint;
  return { ...rest, snapshot, machine: { id: target.id, version: target.version } };
}
