import type { Envelope } from './envelope.js';
import type { Storage, StorageOp } from './storage.js';

/** Lifecycle of a transport. */
export type TransportStatus = 'open' | 'closing' | 'closed';

/** What a receiving transport tells `deliver` besides the envelope. */
export interface DeliveryReceipt {
  /** The sender's per-pair sequence number of this envelope. */
  readonly seq: number;
  /**
   * Set by a transport that checked the envelope against `EnvelopeSchema` itself while
   * decoding the frame it came in: the frame's size, a bound of the envelope's wire size.
   * The node then applies only its own size limit to that bound instead of parsing the
   * envelope again (an envelope is validated once on the receive path). A transport that
   * hands over envelopes it did not check leaves it out.
   */
  readonly checkedWithin?: number;
  /**
   * Returns the storage write that records this envelope as delivered. A deliverer sharing
   * the transport's storage may include it in the same atomic batch that makes the envelope
   * durable; the transport then does not write it itself, and a crash can never deliver the
   * envelope twice. Without this the transport writes the cursor right after `deliver`
   * resolves, and a crash in between redelivers that one envelope.
   */
  takeCursorOps(): StorageOp[];
}

/**
 * Hands an envelope from `fromNode` (authenticated) to the local node. Resolve once it is
 * durably accepted: only then is it acknowledged. Throw a `TroupeError` with code
 * `UNKNOWN_ACTOR`, `INVALID_ENVELOPE`, `FRAME_TOO_LARGE` or `ENVELOPE_REFUSED` to refuse it
 * for good (it is dead-lettered, and acknowledged as refused so the sender stops resending
 * it); any other error means "try again later".
 */
export type DeliverFn = (envelope: Envelope, fromNode: string, receipt: DeliveryReceipt) => Promise<void>;

/** What a transport knows about one remote node. */
export interface PeerStatus {
  nodeId: string;
  /** Where this node dials it; absent for peers that only dial in. */
  url?: string;
  /** `waiting`: no url and no inbound connection, so mail waits for the peer to dial in. */
  state: 'connecting' | 'open' | 'backoff' | 'waiting' | 'closed';
  /** Authenticated connections the peer opened to us. */
  inbound: number;
  /** Envelopes persisted for it but not yet acknowledged. */
  unacked: number;
  /** Highest sequence number assigned to it, and the highest it acknowledged. */
  assigned: number;
  acked: number;
  lastError?: string;
}

/**
 * The transport plug-in point: how a node reaches the nodes that host the rest of a run.
 * Delivery is at-least-once with per-pair order; receivers deduplicate (the transport by
 * sequence number, the run by envelope id), so processing is effectively once. `send` is
 * durable before it resolves; `deliver` is called in per-pair order, one envelope at a time
 * per sender. `transportConformance` of `troupe/testing` checks all of it.
 */
export interface Transport extends AsyncDisposable {
  readonly nodeId: string;
  readonly status: TransportStatus;
  /**
   * Validates `envelope`, numbers it for the pair and appends it durably to the outbox for
   * `toNode`; resolves once persisted, not when acknowledged (see {@link Transport.flushed}).
   * Misuse (sending to itself, a bad node id) throws a `TypeError`; a closed transport
   * rejects with `NODE_CLOSED`, an invalid envelope with `INVALID_ENVELOPE`.
   */
  send(toNode: string, envelope: Envelope): Promise<void>;
  /**
   * Optional: takes `envelope` for `toNode` into the outbox through the caller's own batch.
   * Returns the ops that write its outbox entry, for the caller to put in the atomic batch
   * that also records the envelope's cause (a run's checkpoint), so an envelope leaving a run
   * costs one durable write, not one in the run and another in the transport. The caller
   * calls `commit()` once that batch is durable (it is then sent, in its pair's order) or
   * `abort()` when it failed. `undefined` when the transport cannot take it now (no room, an
   * invalid envelope, closed): the caller persists it itself and uses {@link send} once durable.
   */
  reserve?(toNode: string, envelope: Envelope): OutboxReservation | undefined;
  /** Resolves once `toNode` acknowledged everything sent to it so far; rejects with `NODE_CLOSED` on close. */
  flushed(toNode: string): Promise<void>;
  peers(): PeerStatus[];
  /** Idempotent: stops delivering, closes every socket and server it opened, waits for writes. */
  close(): Promise<void>;
}

/** An envelope numbered by {@link Transport.reserve}, written by the caller's own batch. */
export interface OutboxReservation {
  /** Its write: put it in the batch whose durability `commit()` reports. */
  readonly ops: readonly StorageOp[];
  /** The batch is durable: send it. Idempotent. */
  commit(): void;
  /** The batch failed: it does not exist. Idempotent. */
  abort(): void;
}

/** What a node hands its transport when it creates it. */
export interface TransportBindings {
  nodeId: string;
  /** The node's storage, for the transport's own outbox and inbox positions. */
  storage: Storage;
  /** Where received envelopes go (the node's router); see {@link DeliverFn}. */
  deliver: DeliverFn;
}

/** Creates the node's transport (called once by `createNode`). */
export type TransportFactory = (bindings: TransportBindings) => Promise<Transport>;

/** The address of a node's endpoint that spawns run parts. */
export const PART_ACTOR_ID = '_part';

// The system messages and their payloads are part of the protocol (core/protocol.ts).
export { SystemMessage, SpawnPayloadSchema, EndPayloadSchema, type SpawnPayload, type EndPayload } from './protocol.js';
