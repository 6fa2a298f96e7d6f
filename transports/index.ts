import type { Envelope } from '../core/envelope.js';
import type { StorageOp } from '../core/storage.js';
import type { NodeTransport } from '../core/transport.js';

/**
 * Transports carry envelopes between nodes. The contract below extends core's
 * `NodeTransport` (and is what `transportConformance` of `troupe/testing` checks): `send` is durable
 * before it resolves, `deliver` is called in per-pair order, one envelope at a time per
 * sender, at least once; the receiver's persisted cursor makes processing effectively once.
 */

/** Lifecycle of a transport. */
export type TransportStatus = 'open' | 'closing' | 'closed';

/** What a receiving transport tells `deliver` besides the envelope. */
export interface DeliveryReceipt {
  /** The sender's per-pair sequence number of this envelope. */
  readonly seq: number;
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
 * A node's link to other nodes: core's {@link NodeTransport} (what `createNode` needs) plus
 * what operators and tests look at.
 */
export interface Transport extends NodeTransport, AsyncDisposable {
  readonly nodeId: string;
  readonly status: TransportStatus;
  /**
   * Validates `envelope`, numbers it for the pair and appends it durably to the outbox for
   * `toNode`; resolves once persisted, not when acknowledged (see {@link Transport.flushed}).
   * Misuse (sending to itself, a bad node id) throws a `TypeError`; a closed transport
   * rejects with `NODE_CLOSED`, an invalid envelope with `INVALID_ENVELOPE`.
   */
  send(toNode: string, envelope: Envelope): Promise<void>;
  /** Resolves once `toNode` acknowledged everything sent to it so far; rejects with `NODE_CLOSED` on close. */
  flushed(toNode: string): Promise<void>;
  peers(): PeerStatus[];
  /** Idempotent: stops delivering, closes every socket and server it opened, waits for writes. */
  close(): Promise<void>;
}

export { createWsTransport, wsTransport, type WsTransport, type WsTransportOptions, type WsTransportFactoryOptions, type WsTransportStats } from './ws.js';
export { createOutbox, createInbox, transportKeys, DEFAULT_OUTBOX_LIMITS, type Outbox, type Inbox, type OutboxEntry, type InboxCursor, type DeadLetter } from './outbox.js';
export { decodeFrame, encodeBatch, encodeAck, encodeHello, encodeFrame, FrameSchema, BatchFrameSchema, AckFrameSchema, HelloFrameSchema, MAX_BATCH_ITEMS, type Frame, type BatchFrame, type BatchItem } from './frames.js';
export { PROTOCOL, HEADERS, NODE_ID, assertNodeId, secretKey, clientHandshake, serverProof, verifyServerProof, newChallenge, createHandshakeVerifier, type HandshakeVerdict, type HandshakeVerifier } from './auth.js';
export { createFrameSeal, deriveSessionKeys, MAC_BYTES, type FrameSeal, type SessionKeys } from './session.js';
export { resolveTls, loadTlsFiles, type WsTlsOptions, type ResolvedTls, type TlsFiles, type Pem } from './tls.js';
