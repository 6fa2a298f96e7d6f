import { PART_ACTOR_ID } from './transport.js';

/**
 * The addresses the kernel itself gives meaning to. Actors of a run are addressed
 * `<runId>/<actorId>`; inside a run addresses stay relative.
 */

/** The address of the root actor inside every run. */
export const ROOT_ACTOR_ID = 'crew';

/** Addresses starting with this are a node's ephemeral `ask` inboxes (`_ask.<node>/<corr>`). */
export const ASK_PREFIX = '_ask';

/** The root of a run part hosted by `nodeId`. */
export const partActorId = (nodeId: string) => `${PART_ACTOR_ID}.${nodeId}`;

/** The node of a run part's root actor id (`_part.<node>`), `undefined` for any other actor id. */
export const partNodeOf = (actorId: string): string | undefined => (actorId.startsWith(`${PART_ACTOR_ID}.`) ? actorId.slice(PART_ACTOR_ID.length + 1) : undefined);

/** The node of an `ask` inbox's run id (`_ask.<node>`), `undefined` for any other run id. */
export const askNodeOf = (runId: string | undefined): string | undefined => (runId?.startsWith(`${ASK_PREFIX}.`) ? runId.slice(ASK_PREFIX.length + 1) : undefined);

/** Whether `address` is one of a node's `ask` inboxes (replies to it are never persisted). */
export const isAskAddress = (address: string) => address.startsWith(ASK_PREFIX);
