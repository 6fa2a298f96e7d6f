import { agentOfCallId } from './call-id.js';
import type { LedgerEntry } from './run-store.js';

/** Where a restored run's ledger entries are read from, one by id or all at once. */
export interface LedgerSource {
  one(callId: string): Promise<LedgerEntry | undefined>;
  all(): Promise<readonly LedgerEntry[]>;
}

/** Options of {@link createRunLedger}. */
export interface RunLedgerOptions {
  source: LedgerSource;
  /**
   * Learns the values of secrets by name before an entry that used them is handed out: a
   * replayed result never resolves its secrets again, yet what the run writes from it must
   * be scrubbed of them.
   */
  recall(names: readonly string[]): Promise<void>;
}

/**
 * The effect ledger of one run, as the run's calls see it.
 *
 * A run started in this process has every entry in memory: lookups answer synchronously.
 * A restored run does not read its ledger back (a long run's ledger holds a result per call,
 * megabytes that a resume would decode for the few calls it replays): an entry is read by
 * its call id the first time a call asks for it, as DBOS reads a step's recorded output. Only
 * effect inheritance, which scans an agent's earlier calls, loads the whole ledger, once.
 *
 * An agent makes its calls one at a time, in order, and the batch that records a call also
 * holds the agent's state after it: everything stored for an agent precedes the state it was
 * restored in. So once a lookup of an agent's call finds nothing, none of its later calls can
 * be stored either, and they are answered at once, in the same turn as the call (which keeps
 * a tool's intent in the batch of the answer that asked for it). A restored agent reads
 * storage for the call in flight at its checkpoint and for the first new one, no more.
 */
export interface RunLedger {
  /**
   * The entry of `callId`: synchronously when the ledger knows (in memory, or complete),
   * else a promise of the stored entry.
   */
  get(callId: string): LedgerEntry | undefined | Promise<LedgerEntry | undefined>;
  /** Every entry of the run (loads the stored ones the first time for a restored run). */
  all(): Promise<ReadonlyMap<string, LedgerEntry>>;
  /** Records an entry written by this process. */
  set(entry: LedgerEntry): void;
  /** Names of the secrets the run's calls resolved, as far as this process knows them. */
  readonly secretNames: ReadonlySet<string>;
  /** From now on, entries this process has not seen are read from the source (a restore). */
  restored(secretNames: Iterable<string>): void;
}

/** Creates the ledger of one run; see {@link RunLedger}. */
export function createRunLedger(options: RunLedgerOptions): RunLedger {
  const entries = new Map<string, LedgerEntry>();
  // Agents one of whose lookups found nothing stored: their later calls are all new (and a
  // call asking twice reads storage once).
  const caughtUp = new Set<string>();
  const secretNames = new Set<string>();
  let complete = true;
  let loading: Promise<ReadonlyMap<string, LedgerEntry>> | undefined;

  const learn = async (found: readonly (LedgerEntry | undefined)[]): Promise<void> => {
    const names = [...new Set(found.flatMap((entry) => entry?.secrets ?? []))].filter((name) => !secretNames.has(name));
    if (names.length === 0) return;
    await options.recall(names);
    for (const name of names) secretNames.add(name);
  };

  return {
    get(callId) {
      const known = entries.get(callId);
      if (known || complete || caughtUp.has(agentOfCallId(callId))) return known;
      return (async () => {
        const stored = await options.source.one(callId);
        await learn([stored]);
        // This process may have recorded the call meanwhile: its entry is the newer one.
        const now = entries.get(callId);
        if (now) return now;
        if (stored) entries.set(callId, stored);
        else caughtUp.add(agentOfCallId(callId));
        return stored;
      })();
    },
    all() {
      if (complete) return Promise.resolve(entries);
      loading ??= (async () => {
        const stored = await options.source.all();
        await learn(stored);
        for (const entry of stored) if (!entries.has(entry.callId)) entries.set(entry.callId, entry);
        complete = true;
        caughtUp.clear();
        return entries;
      })();
      return loading;
    },
    set(entry) {
      entries.set(entry.callId, entry);
      for (const name of entry.secrets ?? []) secretNames.add(name);
    },
    secretNames,
    restored(names) {
      complete = false;
      loading = undefined;
      caughtUp.clear();
      for (const name of names) secretNames.add(name);
    },
  };
}
