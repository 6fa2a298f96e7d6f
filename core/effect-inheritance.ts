import { canonicalJson } from './audit-log.js';
import { parseToolCallId } from './call-id.js';
import type { LedgerEntry } from './run-store.js';

/**
 * What a restarted attempt owes to the attempts before it.
 *
 * Supervision restarts work (`oneForOne` gives the failed agent its task again, `oneForAll`
 * resets every agent and starts the process over, a manager re-delegates after an
 * escalation), and the new attempt runs under new call ids. Without a rule, every effect the
 * earlier attempt completed would be executed again. The rule: an effect recorded by a task
 * of this agent that failed or was reset is owed to the agent's later attempts in the same
 * run. The first later call of the same tool with the same (validated) arguments takes it
 * over, at most once per recorded effect:
 * - a recorded result is reused, never run again (whatever the effect kind);
 * - an intent without result is an interrupted call, treated as on resume: `read` /
 *   `idempotent` run again with the recorded idempotency key, `compensatable` compensated
 *   first, `irreversible` parked for a human.
 * `read` calls are not effects and are never inherited. Calls that never touched the world
 * (refused, unknown tool, invalid arguments) have no `effect` in the ledger and are not
 * inherited either.
 */
export function findInheritedEffect(
  ledger: ReadonlyMap<string, LedgerEntry>,
  agentId: string,
  inherits: readonly number[] | undefined,
  tool: string,
  args: unknown,
): LedgerEntry | undefined {
  if (!inherits || inherits.length === 0) return undefined;
  const tasks = new Set(inherits);
  const taken = new Set<string>();
  for (const entry of ledger.values()) if (entry.inheritedFrom) taken.add(entry.inheritedFrom);
  const wanted = canonicalJson(args);
  let best: { entry: LedgerEntry; task: number; step: number } | undefined;
  for (const entry of ledger.values()) {
    if (entry.kind !== 'tool' || !entry.effect || entry.effect === 'read' || entry.name !== tool || taken.has(entry.callId)) continue;
    const id = parseToolCallId(entry.callId);
    if (!id || id.agentId !== agentId || !tasks.has(id.task)) continue;
    if (canonicalJson(entry.args) !== wanted) continue;
    // The oldest first: the new attempt repeats the old one's calls in their order.
    if (!best || id.task < best.task || (id.task === best.task && (id.step < best.step || (id.step === best.step && entry.ts < best.entry.ts)))) {
      best = { entry, task: id.task, step: id.step };
    }
  }
  return best?.entry;
}
