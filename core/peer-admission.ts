import { askNodeOf, partNodeOf, ROOT_ACTOR_ID } from './address.js';
import { parseAddress, type Envelope } from './envelope.js';
import { ErrorCode, TroupeError } from './errors.js';
import { SpawnPayloadSchema, SystemMessage, type SpawnPayload } from './protocol.js';
import type { RunRecord } from './run-store.js';
import type { RunnableDefinition } from './runtime.js';

/**
 * What a node accepts from a peer. The transport authenticates the node at the other end of
 * a connection; nothing in an envelope is believed beyond that. A peer speaks for itself only
 * (the node part of `from`, a spawn's `origin` and a `replyTo` inbox must be that peer), about
 * runs both nodes take part in, and to actors of this node only: it never makes this node
 * relay, so it cannot make it fill an outbox for a node nobody knows, nor bounce mail around.
 * Every refusal is `ENVELOPE_REFUSED`, which the transport dead-letters and acknowledges as
 * refused: a retry could never change the answer.
 */

/** A run as far as admission needs it: which node hosts which of its actors. */
export interface RunPlacement {
  /** The nodes taking part in the run, this one included. */
  readonly nodes: ReadonlySet<string>;
  nodeOf(actorId: string): string;
}

/**
 * The placement of a run from its record and crew (the same answer as `RunHost.nodeOf`, for
 * runs loaded or not). Without the crew only the record's own knowledge counts.
 */
export function runPlacement(self: string, record: Pick<RunRecord, 'part'>, definition: Pick<RunnableDefinition, 'placement'> | undefined): RunPlacement {
  const placement = definition?.placement ?? {};
  const part = record.part;
  const nodes = new Set<string>([self, ...Object.values(placement), ...(part ? [part.origin] : [])]);
  return {
    nodes,
    nodeOf(actorId) {
      const partNode = partNodeOf(actorId);
      if (partNode !== undefined) return partNode;
      if (part?.actors.includes(actorId)) return self;
      const placed = placement[actorId];
      if (placed !== undefined) return placed;
      return part ? part.origin : self;
    },
  };
}

/** What {@link admitPeerEnvelope} asks the node. */
export interface AdmissionContext {
  nodeId: string;
  /**
   * The run `runId` as this node knows it (loaded, unloaded or stored), or `undefined`; at
   * once when it is loaded, so admitting mail for a live run costs no turn of the event loop.
   */
  run(runId: string): RunPlacement | undefined | Promise<RunPlacement | undefined>;
}

const refuse = (why: string, envelope: Envelope, fromNode: string, details: Record<string, unknown> = {}): TroupeError =>
  new TroupeError(ErrorCode.ENVELOPE_REFUSED, `refused envelope ${envelope.id} (${envelope.type}) from node "${fromNode}": ${why}`, {
    retryable: false,
    details: { id: envelope.id, type: envelope.type, from: envelope.from, to: envelope.to, fromNode, ...details },
  });


/**
 * Throws `ENVELOPE_REFUSED` unless `envelope`, received from the authenticated peer
 * `fromNode`, may enter this node. Payload schemas are checked before (core/protocol.ts);
 * a spawn's semantics are checked where it is honoured ({@link checkSpawn}). Returns a
 * promise only when it had to look the run up in storage.
 */
export function admitPeerEnvelope(envelope: Envelope, fromNode: string, ctx: AdmissionContext): void | Promise<void> {
  const to = parseAddress(envelope.to);
  const from = parseAddress(envelope.from);
  const toAsk = askNodeOf(to.runId);
  if (toAsk !== undefined && toAsk !== ctx.nodeId) throw refuse(`it is for node "${toAsk}"'s ask inbox; replies go straight to the asker`, envelope, fromNode);
  if (to.runId === undefined) throw refuse('it names no run', envelope, fromNode);
  const toPart = partNodeOf(to.actorId);
  if (toAsk === undefined && toPart !== undefined && toPart !== ctx.nodeId) {
    throw refuse(`it is for the part on node "${toPart}"; this node relays no system messages`, envelope, fromNode);
  }
  if (envelope.replyTo !== undefined) {
    const reply = parseAddress(envelope.replyTo);
    const replyAsk = askNodeOf(reply.runId);
    if (replyAsk !== undefined ? replyAsk !== fromNode : reply.runId !== (toAsk === undefined ? to.runId : from.runId)) {
      throw refuse(`its replyTo ${envelope.replyTo} is not the sender's`, envelope, fromNode);
    }
  }
  // The sender's own inbox or part root: the node is in the address.
  const fromAsk = askNodeOf(from.runId);
  const claimed = fromAsk ?? partNodeOf(from.actorId);
  if (claimed !== undefined && claimed !== fromNode) throw refuse(`it claims to come from node "${claimed}"`, envelope, fromNode, { claimed });
  if (envelope.type === SystemMessage.spawn && toAsk === undefined) {
    const origin = (envelope.payload as Partial<SpawnPayload> | undefined)?.origin;
    if (origin !== fromNode) throw refuse(`its origin "${String(origin)}" is not the sending node`, envelope, fromNode, { claimed: origin });
    if (from.runId !== to.runId || from.actorId !== ROOT_ACTOR_ID) throw refuse(`a spawn comes from the run's root, not ${envelope.from}`, envelope, fromNode);
    return;
  }
  // A reply to one of our asks comes from an actor of a run this node knows.
  const runId = toAsk === undefined ? to.runId : from.runId;
  if (runId === undefined) throw refuse('its sender names no run', envelope, fromNode);
  const check = (run: RunPlacement | undefined) => {
    if (!run) throw refuse(`run "${runId}" has no part on this node`, envelope, fromNode, { runId });
    if (!run.nodes.has(fromNode)) throw refuse(`node "${fromNode}" takes no part in run "${runId}"`, envelope, fromNode, { runId });
    if (fromAsk === undefined) {
      if (from.runId !== runId) throw refuse(`its sender ${envelope.from} belongs to another run`, envelope, fromNode, { runId });
      const claimed = run.nodeOf(from.actorId);
      if (claimed !== fromNode) throw refuse(`${envelope.from} lives on node "${claimed}"`, envelope, fromNode, { claimed, runId });
    }
    // Every node of a run sends to the node of the actor it means, so a peer never needs this
    // node to pass its mail on; relaying would let it bounce mail around the run's nodes.
    if (toAsk === undefined && run.nodeOf(to.actorId) !== ctx.nodeId) {
      throw refuse(`${envelope.to} is not hosted here, and this node relays nothing for peers`, envelope, fromNode, { runId });
    }
  };
  const run = ctx.run(runId);
  if (run instanceof Promise) return run.then(check);
  check(run);
}

/**
 * Parses a spawn and throws `ENVELOPE_REFUSED` unless this node can honour it: the crew is
 * registered here at the spawn's version, and every actor named is one of the crew's placed
 * on this node. Checked before anything of the part exists, so a refusal leaves nothing behind.
 */
export function checkSpawn(envelope: Envelope, runId: string, self: string, crews: ReadonlyMap<string, RunnableDefinition>): { spawn: SpawnPayload; definition: RunnableDefinition } {
  const parsed = SpawnPayloadSchema.safeParse(envelope.payload);
  const no = (why: string, details: Record<string, unknown> = {}) =>
    new TroupeError(ErrorCode.ENVELOPE_REFUSED, `node "${self}" refuses to host a part of run "${runId}": ${why}`, { retryable: false, details: { runId, id: envelope.id, ...details } });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw no(`payload.${issue?.path.map(String).join('.') ?? ''}: ${issue?.message ?? 'malformed'}`, { reason: 'payload' });
  }
  const spawn = parsed.data;
  const definition = crews.get(spawn.crew);
  if (!definition) throw no(`crew "${spawn.crew}" is not registered here`, { reason: 'crew', crew: spawn.crew });
  if (definition.version !== spawn.version) throw no(`crew "${spawn.crew}" is at version ${definition.version} here, not ${spawn.version}`, { reason: 'version', crew: spawn.crew });
  if (!definition.createPartMachine) throw no(`crew "${spawn.crew}" cannot host a part of a run`, { reason: 'crew', crew: spawn.crew });
  const stray = spawn.actors.filter((a, i) => !definition.actorIds.includes(a) || definition.placement?.[a] !== self || spawn.actors.indexOf(a) !== i);
  if (stray.length > 0) throw no(`${stray.join(', ')} ${stray.length === 1 ? 'is' : 'are'} not actors of crew "${spawn.crew}" placed on this node`, { reason: 'actors', actors: stray });
  return { spawn, definition };
}
