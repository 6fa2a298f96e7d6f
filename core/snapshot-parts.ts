import type { AnyActor, AnyActorRef } from 'xstate';
import { stateString } from './state-string.js';

/**
 * A run's deep XState snapshot, taken apart so that a checkpoint costs what the step
 * changed. XState persists a root actor with all its children in one object; writing that
 * object at every step makes the bytes of a step grow with the conversation and with the
 * crew. Here the root and each of its direct children (the agents, the blackboard, timers)
 * become one record each, written only in a checkpoint where that actor changed, and arrays
 * that only grow (a conversation) become append-only logs: each element is written once and
 * a record refers to a range of the log. Restore reads the records and logs back and
 * reassembles exactly the object `getPersistedSnapshot()` would have returned.
 *
 * Change detection relies on XState's immutability: a transition replaces an actor's
 * snapshot object, and `assign` builds new arrays around the same element objects, so
 * identity tells what changed without comparing contents.
 */

// A key no XState snapshot produces by itself: context, input and output are JSON-like data.
const LOG_REF = '\u0000log';

/** A range of an append-only log: entries `from` ≤ n < `to` of `log`, `length` of them. */
export interface LogRef {
  log: string;
  from: number;
  to: number;
  length: number;
}

/** What a checkpoint writes of one actor. */
export interface ActorRecord {
  /** Its persisted snapshot; the root's lists its children without their snapshots. */
  snapshot: unknown;
  /** Its state as a dotted path (for history and inspectors, without the snapshot). */
  state?: string;
}

/** One new log entry. */
export interface LogEntry {
  log: string;
  n: number;
  value: unknown;
}

/** What one capture produced: the records of changed actors, new log entries and the log counter. */
export interface Capture {
  records: Map<string, ActorRecord>;
  entries: LogEntry[];
  /** The highest log entry number used so far in the run (persisted in the manifest). */
  logSeq: number;
  /** Direct children of the root at this point (with the root, the run's actors). */
  actorIds: string[];
}

/** Options of {@link createSnapshotSplitter}. */
export interface SnapshotSplitterOptions {
  /** Arrays with at least this many elements become logs. Default 8. */
  minLogLength?: number;
  /** The highest log entry number already used (a restored run continues after it). Default 0. */
  logSeq?: number;
}

type Live = { getSnapshot(): unknown };

/** The snapshot objects of `ref` and all its descendants: equal lists mean nothing changed. */
function identities(ref: Live): unknown[] {
  const out: unknown[] = [];
  const walk = (r: Live) => {
    const snapshot = r.getSnapshot() as { children?: Record<string, Live> } | undefined;
    out.push(snapshot);
    const children = snapshot?.children;
    if (children && typeof children === 'object') for (const id of Object.keys(children)) walk(children[id]!);
  };
  walk(ref);
  return out;
}

const sameList = (a: readonly unknown[] | undefined, b: readonly unknown[]) => a !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);

/** Log ids are key segments: no `:` (the layout's separator). */
const logIdOf = (actorId: string, path: readonly string[]) => [actorId, ...path].join('.').replace(/:/g, '_');

/**
 * Splits the live root actor of one run into records and logs, remembering what it wrote so
 * the next capture writes only what changed. One splitter per run host.
 */
export function createSnapshotSplitter(options: SnapshotSplitterOptions = {}) {
  const minLog = options.minLogLength ?? 8;
  let logSeq = options.logSeq ?? 0;
  const refOf = new WeakMap<readonly unknown[], LogRef>();
  const latest = new Map<string, { array: readonly unknown[]; ref: LogRef }>();
  const seen = new Map<string, unknown[]>();

  /** Replaces growing arrays of `value` by log references, collecting the new entries. */
  const extract = (actorId: string, value: unknown, entries: LogEntry[]): unknown => {
    const walk = (v: unknown, path: string[]): unknown => {
      if (Array.isArray(v)) {
        // A logged array stays one whatever its length: a deferred one is empty until filled.
        if (v.length >= minLog || refOf.has(v)) return { [LOG_REF]: logged(logIdOf(actorId, path), v, entries) };
        return v.map((item, i) => walk(item, [...path, String(i)]));
      }
      if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
        const out: Record<string, unknown> = {};
        for (const [k, child] of Object.entries(v)) out[k] = walk(child, [...path, k]);
        return out;
      }
      return v;
    };
    return walk(value, []);
  };

  const logged = (log: string, array: readonly unknown[], entries: LogEntry[]): LogRef => {
    const known = refOf.get(array);
    if (known) return known;
    const last = latest.get(log);
    let ref: LogRef;
    // A conversation restored but not yet read back (see {@link reassemble}'s `defer`) is
    // empty: it is no prefix of anything, and an array built from it starts a new segment.
    if (last && last.array.length === last.ref.length && array.length >= last.array.length && last.array.every((item, i) => item === array[i])) {
      // The same array with elements appended: only the new ones are written.
      const added = array.length - last.array.length;
      for (let i = last.array.length; i < array.length; i++) entries.push({ log, n: ++logSeq, value: array[i] });
      ref = { log, from: last.ref.from, to: added > 0 ? logSeq + 1 : last.ref.to, length: array.length };
    } else {
      // A new array (a new task's conversation): a new segment, after every entry so far.
      const from = logSeq + 1;
      for (const item of array) entries.push({ log, n: ++logSeq, value: item });
      ref = { log, from, to: logSeq + 1, length: array.length };
    }
    refOf.set(array, ref);
    latest.set(log, { array, ref });
    return ref;
  };

  // The first capture (and the first after `forget`) looks at every actor.
  let fullScan = true;

  /**
   * `child`'s persisted snapshot, with the growing arrays of its context logged first: XState's
   * `getPersistedSnapshot` walks the whole context (a 5,000-message conversation included)
   * looking for actor references, so the arrays are swapped for their log references before.
   */
  const persist = (id: string, child: AnyActorRef, entries: LogEntry[]): { value?: unknown } => {
    const live = child.getSnapshot() as { context?: unknown; value?: unknown };
    const context = live?.context;
    if (live?.value === undefined || !context || typeof context !== 'object' || Array.isArray(context)) return child.getPersistedSnapshot() as { value?: unknown };
    let swapped: Record<string, unknown> | undefined;
    for (const [key, value] of Object.entries(context)) {
      if (Array.isArray(value) && (value.length >= minLog || refOf.has(value))) (swapped ??= { ...context })[key] = { [LOG_REF]: logged(logIdOf(id, ['context', key]), value, entries) };
    }
    if (!swapped) return child.getPersistedSnapshot() as { value?: unknown };
    return (child as unknown as AnyActor).logic.getPersistedSnapshot({ ...(live as object), context: swapped } as never) as { value?: unknown };
  };

  return {
    /**
     * Captures `root` (the run's root actor, addressed as `rootId`): records of the actors
     * that changed since the last capture (all of them the first time) and of those in
     * `force` (their mailbox moved), and new log entries. With `touched` (the direct children
     * XState reported a snapshot of since the last capture), only those are looked at.
     */
    capture(root: AnyActor, rootId: string, force: ReadonlySet<string> = new Set(), touched?: ReadonlySet<string>): Capture {
      const records = new Map<string, ActorRecord>();
      const entries: LogEntry[] = [];
      const snapshot = root.getSnapshot() as { children: Record<string, AnyActorRef>; value?: unknown };
      const children = snapshot.children ?? {};
      const actorIds = Object.keys(children);
      const rootIdentity = [snapshot];
      if (force.has(rootId) || !sameList(seen.get(rootId), rootIdentity)) {
        // The root without its children's snapshots: those are records of their own.
        const own = root.logic.getPersistedSnapshot({ ...snapshot, children: {} } as never) as Record<string, unknown>;
        const stubs: Record<string, unknown> = {};
        for (const id of actorIds) {
          const child = children[id] as AnyActorRef & { src?: unknown; systemId?: string; _syncSnapshot?: unknown };
          stubs[id] = { src: child.src, systemId: child.systemId, syncSnapshot: child._syncSnapshot };
        }
        records.set(rootId, { snapshot: extract(rootId, { ...own, children: stubs }, entries), state: stateString(snapshot.value) });
        seen.set(rootId, rootIdentity);
      }
      // Only the actors XState reported a snapshot of (and new ones) can have changed: the
      // others are not even looked at, so a step costs the same in a crew of ten or a thousand.
      const candidates = touched && !fullScan ? actorIds.filter((id) => touched.has(id) || force.has(id) || !seen.has(id)) : actorIds;
      fullScan = false;
      for (const id of candidates) {
        const child = children[id]!;
        const identity = identities(child);
        if (!force.has(id) && sameList(seen.get(id), identity)) continue;
        const persisted = persist(id, child, entries);
        records.set(id, { snapshot: extract(id, persisted, entries), ...(persisted?.value !== undefined ? { state: stateString(persisted.value) } : {}) });
        seen.set(id, identity);
      }
      for (const id of seen.keys()) if (id !== rootId && !(id in children)) seen.delete(id);
      return { records, entries, logSeq, actorIds };
    },

    /**
     * Takes the actors of `root` as written, as they are now: a restored actor, not yet
     * started, is what its records say. The next capture then writes only what changed since,
     * not every record of the run again (a thousand for a crew of a thousand).
     */
    assumeWritten(root: AnyActor, rootId: string): void {
      const snapshot = root.getSnapshot() as { children?: Record<string, AnyActorRef> };
      seen.set(rootId, [snapshot]);
      for (const [id, child] of Object.entries(snapshot.children ?? {})) seen.set(id, identities(child));
      fullScan = false;
    },

    /** Makes every actor count as changed: the next capture writes all records. */
    forget(): void {
      seen.clear();
      fullScan = true;
    },

    /** Teaches the splitter the arrays a restore rebuilt, so unchanged logs are not written again. */
    seed(arrays: Iterable<readonly [readonly unknown[], LogRef]>): void {
      for (const [array, ref] of arrays) {
        refOf.set(array, ref);
        const last = latest.get(ref.log);
        if (!last || last.ref.to <= ref.to) latest.set(ref.log, { array, ref });
      }
    },
  };
}

/** The splitter type returned by {@link createSnapshotSplitter}. */
export type SnapshotSplitter = ReturnType<typeof createSnapshotSplitter>;

/** Where {@link reassemble} reads from. */
export interface PartReader {
  /** The record of `actorId` as of the checkpoint being restored. */
  actor(actorId: string): Promise<ActorRecord | undefined>;
  /** The entries of a log range, in order. */
  log(ref: LogRef): Promise<unknown[]>;
}

/**
 * A logged array of an actor's context that a restore left unread: `array` is empty until
 * `fillDeferredLog` (core/checkpoints.ts) pushes the log's entries into it, in place: the
 * live actor holds this very object.
 */
export interface DeferredLog {
  actorId: string;
  array: unknown[];
  ref: LogRef;
}

/** Options of {@link reassemble}. */
export interface ReassembleOptions {
  /**
   * Which logged arrays of a direct child's context (`key` of `actorId`'s context) are left
   * unread: they come back empty and are listed in `deferred`. Default: none.
   */
  defer?: (actorId: string, key: string) => boolean;
}

/** Throws when `values`, read for `ref`, are not all of its entries: the database is damaged. */
export function checkLogRange(ref: LogRef, values: readonly unknown[]): void {
  if (values.length !== ref.length) throw new RangeError(`log ${ref.log} holds ${values.length} of the ${ref.length} entries ${ref.from}..${ref.to - 1} a record refers to`);
}

/** Where a value of a record refers to a log, the reference. */
const refIn = (value: unknown): LogRef | undefined => (value && typeof value === 'object' && !Array.isArray(value) ? ((value as Record<string, unknown>)[LOG_REF] as LogRef | undefined) : undefined);

/**
 * Rebuilds the deep persisted snapshot of a run's root from its records and logs. Returns
 * the arrays it rebuilt with their references, for {@link SnapshotSplitter.seed}, and the
 * ones it left unread (`options.defer`). A missing record or a log range of the wrong length
 * throws: the database is damaged.
 */
export async function reassemble(
  reader: PartReader,
  rootId: string,
  options: ReassembleOptions = {},
): Promise<{ snapshot: unknown; arrays: Array<[unknown[], LogRef]>; deferred: DeferredLog[] }> {
  const arrays: Array<[unknown[], LogRef]> = [];
  const deferred: DeferredLog[] = [];
  // Promises, so that the reads of every log (and record) a snapshot names go out together:
  // a resume of a crew waits for one round of reads, not one per agent.
  const cache = new Map<string, Promise<unknown[]>>();
  const readLog = async (ref: LogRef): Promise<unknown[]> => {
    const array = await reader.log(ref);
    checkLogRange(ref, array);
    arrays.push([array, ref]);
    return array;
  };
  const rangeKey = (ref: LogRef) => `${ref.log}:${ref.from}:${ref.to}`;
  const resolve = async (v: unknown): Promise<unknown> => {
    if (Array.isArray(v)) return Promise.all(v.map(resolve));
    if (v && typeof v === 'object') {
      const ref = refIn(v);
      if (ref) {
        const key = rangeKey(ref);
        let array = cache.get(key);
        if (!array) cache.set(key, (array = readLog(ref)));
        // The same range read twice is the same array, as it was in the live actor.
        return array;
      }
      const entries = Object.entries(v);
      const values = await Promise.all(entries.map(([, child]) => resolve(child)));
      return Object.fromEntries(entries.map(([k], i) => [k, values[i]]));
    }
    return v;
  };
  const root = await reader.actor(rootId);
  if (!root) throw new RangeError(`the record of the run's root "${rootId}" is missing`);
  const snapshot = (await resolve(root.snapshot)) as { children?: Record<string, Record<string, unknown>> };
  await Promise.all(
    Object.entries(snapshot.children ?? {}).map(async ([id, stub]) => {
      const record = await reader.actor(id);
      if (!record) throw new RangeError(`the record of actor "${id}" is missing`);
      // Before anything of the record is resolved: the same range elsewhere in it (an
      // invoked model call's input is the conversation) is then the same empty array.
      const context = (record.snapshot as { context?: unknown } | undefined)?.context;
      if (options.defer && context && typeof context === 'object') {
        for (const [key, value] of Object.entries(context)) {
          const ref = refIn(value);
          if (!ref || !options.defer(id, key) || cache.has(rangeKey(ref))) continue;
          const array: unknown[] = [];
          cache.set(rangeKey(ref), Promise.resolve(array));
          arrays.push([array, ref]);
          deferred.push({ actorId: id, array, ref });
        }
      }
      stub.snapshot = await resolve(record.snapshot);
    }),
  );
  return { snapshot, arrays, deferred };
}

/** A logged array taken out of a machine's context for a restore. */
interface Lifted {
  context: Record<string, unknown>;
  key: string;
  array: unknown[];
}

type PersistedNode = { context?: unknown; children?: Record<string, { snapshot?: PersistedNode } | undefined> };

/**
 * Restores an actor from a reassembled snapshot without XState walking its conversations.
 *
 * XState's restore walks every machine's context, deeply, for actor references to revive:
 * with thousands of messages that walk was the largest part of a resume, and a logged array
 * (a conversation) never holds references. So the arrays rebuilt from logs are taken out of
 * the contexts they sit in, `restore` runs, and they are put back into the same context
 * objects, which XState keeps. If a future XState copied the contexts instead, the arrays
 * would be missing from the live actor: that is checked, and the restore is then done again
 * with the arrays in place.
 */
export function restoreWithoutWalkingLogs<A extends { getSnapshot(): unknown }>(snapshot: unknown, arrays: ReadonlyArray<readonly [unknown[], LogRef]>, restore: () => A): A {
  const logged = new Set<unknown>(arrays.map(([array]) => array));
  const lifted: Lifted[] = [];
  const visit = (node: PersistedNode | undefined) => {
    const context = node?.context;
    if (context && typeof context === 'object' && !Array.isArray(context)) {
      for (const [key, value] of Object.entries(context)) {
        if (logged.has(value)) {
          lifted.push({ context: context as Record<string, unknown>, key, array: value as unknown[] });
          (context as Record<string, unknown>)[key] = [];
        }
      }
    }
    for (const child of Object.values(node?.children ?? {})) visit(child?.snapshot);
  };
  if (logged.size > 0) visit(snapshot as PersistedNode);
  const actor = restore();
  for (const { context, key, array } of lifted) context[key] = array;
  if (lifted.length === 0) return actor;
  // Every lifted context must be a live one, or the live actor lacks its conversation.
  const live = new Set<unknown>();
  const collect = (ref: { getSnapshot(): unknown }) => {
    const s = ref.getSnapshot() as { context?: unknown; children?: Record<string, { getSnapshot(): unknown }> } | undefined;
    live.add(s?.context);
    for (const child of Object.values(s?.children ?? {})) collect(child);
  };
  collect(actor);
  return lifted.every(({ context }) => live.has(context)) ? actor : restore();
}
