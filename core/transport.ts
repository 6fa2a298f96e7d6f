import type { Envelope } from './envelope.js';
import type { Storage, StorageOp } from './storage.js';

/**
 * The transport plug-in point: how a node reaches the nodes that host the rest of a run.
 * Delivery is at-least-once with per-pair order; receivers deduplicate (the transport by
 * sequence number, the run by envelope id), so processing is effectively once.
 */
export interface NodeTransport {
  /**
   * Queues `envelope` for `toNode`. Resolves once the transport has it durably (it will be
   * delivered, retried across reconnects and restarts, until the peer acknowledges it).
   */
  send(toNode: string, envelope: Envelope): Promise<void>;
  /** Idempotent; closes the sockets and servers the transport opened. */
  close(): Promise<void>;
}

/** What a node hands its transport when it creates it. */
export interface TransportBindings {
  nodeId: string;
  /** The node's storage, for the transport's own outbox and inbox positions. */
  storage: Storage;
  /**
   * Delivers an envelope from `fromNode` to this node. Resolves once it is durably accepted;
   * only then may the transport acknowledge it. Rejects when the envelope is refused.
   */
  deliver(envelope: Envelope, fromNode: string, receipt?: DeliveryReceiptLike): Promise<void>;
}

/**
 * What a transport may hand along with an envelope: the storage write that records it as
 * delivered. A run that accepts the envelope puts that write in the same batch as the
 * envelope itself, so a crash can never leave one without the other.
 */
export interface DeliveryReceiptLike {
  takeCursorOps(): StorageOp[];
}

/** Creates the node's transport (called once by `createNode`). */
export type TransportFactory = (bindings: TransportBindings) => Promise<NodeTransport>;

/** The address of a node's endpoint that spawns run parts. */
export const PART_ACTOR_ID = '_part';

// The system messages and their payloads are part of the protocol (core/protocol.ts).
export { SystemMessage, SpawnPayloadSchema, EndPayloadSchema, type SpawnPayload, type EndPayload } from './protocol.js';
