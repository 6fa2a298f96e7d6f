import { fromStore } from '@xstate/store';
import { z } from 'zod';
import { tool, type Tool } from '../core/tool.js';

/** One blackboard entry and who wrote it. */
export interface BlackboardEntry {
  value: unknown;
  by: string;
  at: number;
}

/** The blackboard's persisted context. */
export interface BlackboardContext {
  entries: Record<string, BlackboardEntry>;
}

/** The id (and systemId) of a crew's blackboard actor. */
export const BLACKBOARD_ID = 'blackboard';

/**
 * A crew's shared blackboard: an `@xstate/store` running as a child actor of the crew root,
 * so it is inside the crew's deep snapshot (persisted and restored with it) and visible to
 * inspectors like any actor.
 */
export function createBlackboardLogic(initial: Record<string, unknown> = {}) {
  return fromStore({
    context: { entries: Object.fromEntries(Object.entries(initial).map(([k, value]) => [k, { value, by: 'crew', at: 0 }])) } as BlackboardContext,
    on: {
      write: (context: BlackboardContext, event: { key: string; value: unknown; by: string; at: number }) => ({
        entries: { ...context.entries, [event.key]: { value: event.value, by: event.by, at: event.at } },
      }),
      remove: (context: BlackboardContext, event: { key: string }) => {
        const { [event.key]: _removed, ...entries } = context.entries;
        return { entries };
      },
    },
  });
}

/** Tools that let agents read and write the crew's blackboard (given to every agent of a crew with one). */
export function blackboardTools(): Tool[] {
  return [
    tool({
      name: 'read_blackboard',
      description: "Reads the crew's shared blackboard: one key, or all keys when none is given.",
      input: z.object({ key: z.string().optional() }),
      effect: 'read',
      scopes: ['blackboard:read'],
      run: ({ key }, ctx) => {
        const board = ctx.blackboard;
        if (!board) throw new Error('this crew has no blackboard');
        return key === undefined ? board.read() : (board.read()[key] ?? null);
      },
    }),
    tool({
      name: 'write_blackboard',
      description: "Writes a value under a key of the crew's shared blackboard for the other agents.",
      input: z.object({ key: z.string().min(1).max(128), value: z.unknown() }),
      // Writing the same value under the same key twice leaves the board as once.
      effect: 'idempotent',
      scopes: ['blackboard:write'],
      run: ({ key, value }, ctx) => {
        const board = ctx.blackboard;
        if (!board) throw new Error('this crew has no blackboard');
        board.write(key, value);
        return { written: key };
      },
    }),
  ];
}
