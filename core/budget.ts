import { ErrorCode, TroupeError } from './errors.js';
import type { UsageLedger, UsageTotals } from './run-store.js';
import type { Budget, RunnableDefinition } from './runtime.js';

const zero = (): UsageTotals => ({ steps: 0, tokens: 0, cost: 0 });

/**
 * A run's model use against its budgets. A step is reserved (and the budgets checked)
 * before each model call; tokens and cost are charged after it. The ledger is part of every
 * checkpoint, so a restart never hands a run a fresh budget.
 */
export class UsageTracker {
  #ledger: UsageLedger = { total: zero(), agents: {} };
  readonly #budgets: RunnableDefinition['budgets'];
  /** Agents whose totals changed since {@link takeChanged}: a checkpoint writes only those. */
  #changed = new Set<string>();

  constructor(budgets: RunnableDefinition['budgets']) {
    this.#budgets = budgets;
  }

  /** Continues from a checkpoint's ledger. */
  restore(ledger: UsageLedger | undefined): void {
    if (ledger) this.#ledger = structuredClone(ledger);
  }

  /** The ledger to persist (the live object: it is encoded at once). */
  get ledger(): UsageLedger {
    return this.#ledger;
  }

  /**
   * Reserves one step for `agentId` or throws `BUDGET_EXCEEDED` (not retryable) naming the
   * budget. Returns the totals to charge once the call has answered.
   */
  reserve(agentId: string): UsageTotals[] {
    const agentTotals = (this.#ledger.agents[agentId] ??= zero());
    const checks: Array<[string, Budget | undefined, UsageTotals]> = [
      ['run', this.#budgets?.run, this.#ledger.total],
      [`agent ${agentId}`, this.#budgets?.agents?.[agentId], agentTotals],
    ];
    for (const [scope, budget, used] of checks) {
      if (!budget) continue;
      const over =
        budget.maxSteps !== undefined && used.steps + 1 > budget.maxSteps
          ? `${budget.maxSteps} model steps`
          : budget.maxTokens !== undefined && used.tokens >= budget.maxTokens
            ? `${budget.maxTokens} tokens (used ${used.tokens})`
            : budget.maxCost !== undefined && used.cost >= budget.maxCost
              ? `$${budget.maxCost} (spent $${used.cost.toFixed(4)})`
              : undefined;
      if (over) {
        throw new TroupeError(ErrorCode.BUDGET_EXCEEDED, `budget of the ${scope} exhausted: ${over}`, {
          details: { scope, budget, used: { ...used } },
          retryable: false,
        });
      }
    }
    this.#ledger.total.steps += 1;
    agentTotals.steps += 1;
    this.#changed.add(agentId);
    return [this.#ledger.total, agentTotals];
  }

  /** The agents whose totals changed since the last call (and forgets them). */
  takeChanged(): Set<string> {
    const changed = this.#changed;
    this.#changed = new Set();
    return changed;
  }

  /** Charges what a reserved call used. */
  charge(agentId: string, reserved: UsageTotals[], tokens: number, cost: number): void {
    this.#changed.add(agentId);
    for (const totals of reserved) {
      totals.tokens += tokens;
      totals.cost += cost;
    }
  }
}
