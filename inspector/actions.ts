import { z } from 'zod';
import { RUN_ID } from '../core/ids.js';
import { isTroupeError } from '../core/errors.js';
import type { InspectorActions } from './index.js';
import { clean } from './text.js';

/**
 * The actions a page may post to `/action` (inspector/server.ts checks origin, content type,
 * size and token before this module sees a body): decide a waiting approval, or fork a run
 * from a checkpoint. Each goes to the {@link InspectorActions} the inspector was given.
 */

const Id = z.string().min(1).max(200);
const RunId = z.string().regex(RUN_ID);

/** An action's body. */
export const ActionSchema = z.discriminatedUnion('action', [
  z.strictObject({ action: z.literal('approve'), approvalId: Id, args: z.unknown().optional(), reason: z.string().max(10_000).optional() }),
  z.strictObject({ action: z.literal('reject'), approvalId: Id, reason: z.string().min(1).max(10_000) }),
  z.strictObject({ action: z.literal('fork'), runId: RunId, at: z.number().int().positive() }),
]);

/** One action. */
export type Action = z.infer<typeof ActionSchema>;

/** What an action answers: an HTTP status, the JSON body, and the run it touched. */
export interface ActionAnswer {
  status: number;
  body: unknown;
  runId?: string;
}

const failure = (status: number, code: string, message: string): ActionAnswer => ({ status, body: { ok: false, error: { code, message: clean(message, 1_000) } } });

/** Runs one validated action; bad input and refusals are answers, not throws. */
export async function actionOf(body: unknown, actions: InspectorActions | undefined): Promise<ActionAnswer> {
  const parsed = ActionSchema.safeParse(body);
  if (!parsed.success) return failure(400, 'BAD_REQUEST', `bad action: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'action'}: ${i.message}`).join('; ')}`);
  const a = parsed.data;
  if (!actions) return failure(409, 'READ_ONLY', 'this inspector has no node to act through: start it with `troupe inspect --run FILE`, or decide with `troupe approve`/`troupe reject`');
  try {
    if (a.action === 'fork') {
      if (!actions.fork) return failure(409, 'FORK_UNAVAILABLE', 'forking needs a node with the database to itself: run `troupe fork <run> --at N`');
      const fork = await actions.fork(a.runId, a.at);
      return { status: 200, body: { ok: true, action: 'fork', runId: fork.runId, from: { runId: a.runId, checkpoint: a.at } }, runId: fork.runId };
    }
    if (a.action === 'approve') await actions.approve(a.approvalId, { ...(a.args !== undefined ? { args: a.args } : {}), ...(a.reason ? { reason: a.reason } : {}) });
    else await actions.reject(a.approvalId, a.reason);
    return { status: 200, body: { ok: true, action: a.action, approvalId: a.approvalId }, runId: undefined };
  } catch (error) {
    const code = isTroupeError(error) ? error.code : 'ACTION_FAILED';
    return failure(isTroupeError(error) ? 409 : 500, code, (error as Error)?.message ?? String(error));
  }
}
