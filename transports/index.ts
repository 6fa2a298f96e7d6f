/**
 * Transports carry envelopes between nodes. Their contract is core's (core/transport.ts),
 * re-exported here beside the WebSocket transport and its parts.
 */
export type { Transport, TransportStatus, DeliveryReceipt, DeliverFn, PeerStatus, TransportBindings, TransportFactory } from '../core/transport.js';

export { createWsTransport, wsTransport, type WsTransport, type WsTransportOptions, type WsTransportFactoryOptions, type WsTransportStats } from './ws.js';
export { createOutbox, transportKeys, DEFAULT_OUTBOX_LIMITS, type Outbox, type OutboxEntry } from './outbox.js';
export { createInbox, type Inbox, type InboxCursor, type DeadLetter } from './inbox.js';
export { decodeFrame, encodeBatch, encodeAck, encodeHello, encodeFrame, FrameSchema, BatchFrameSchema, AckFrameSchema, HelloFrameSchema, MAX_BATCH_ITEMS, type Frame, type BatchFrame, type BatchItem } from './frames.js';
export { PROTOCOL, HEADERS, NODE_ID, assertNodeId, secretKey, clientHandshake, serverProof, verifyServerProof, newChallenge, createHandshakeVerifier, type HandshakeVerdict, type HandshakeVerifier } from './auth.js';
export { createFrameSeal, deriveSessionKeys, MAC_BYTES, type FrameSeal, type SessionKeys } from './session.js';
export { resolveTls, loadTlsFiles, type WsTlsOptions, type ResolvedTls, type TlsFiles, type Pem } from './tls.js';
