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

/** Whether `address` is one of a node's `ask` inboxes (replies to it are never persisted). */
export const isAskAddress = (address: string) => address.startsWith(ASK_PREFIX);
