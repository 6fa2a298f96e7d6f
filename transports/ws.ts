import { WebSocket, type RawData } from 'ws';
import { systemClock, type Clock } from '../core/clock.js';
import { backoffDelay, jitterUnit } from '../core/backoff.js';
import { DEFAULT_MAX_FRAME_BYTES } from '../core/codec.js';
import { encodeEnvelope, envelopeIssue, parseEnvelope, type Envelope } from '../core/envelope.js';
import { ErrorCode, isTroupeError, TroupeError } from '../core/errors.js';
import type { Storage } from '../core/storage.js';
import type { TransportBindings, TransportFactory } from '../core/transport.js';
import { assertNodeId, dialAuthenticated, listenAuthenticated, secretKey, type AuthenticatedListener, type WsLimits } from './auth.js';
import { BATCH_OVERHEAD_BYTES, decodeFrame, encodeAck, encodeBatch, encodeHello, ITEM_OVERHEAD_BYTES, MAX_BATCH_ITEMS, type BatchFrame, type Frame } from './frames.js';
import type { DeliverFn, PeerStatus, Transport, TransportStatus } from './index.js';
import { createMergedWrites } from './merged-writes.js';
import { createInbox, type DeadLetter, type InboxCursor } from './inbox.js';
import { createOutbox, DEFAULT_OUTBOX_LIMITS, type OutboxEntry } from './outbox.js';
import { createFrameSeal, MAC_BYTES, type FrameSeal, type SessionKeys } from './session.js';
import { describeDialError, resolveTls, type ResolvedTls, type WsTlsOptions } from './tls.js';

/** Options of {@link createWsTransport}. */
export interface WsTransportOptions {
  /** This node's id ([A-Za-z0-9_.-], 1-64): what peers see as the sender. */
  nodeId: string;
  /** Accept connections here. Port 0 picks a free port (see {@link WsTransport.address}). */
  listen?: { host?: string; port: number };
  /** Nodes this one dials, by node id: `ws://host:port` (or `wss://`). */
  peers?: Record<string, string>;
  /** Shared HMAC secret of the cluster, at least 16 bytes. */
  secret: string | Uint8Array;
  /** Where the outbox and inbox cursors live (the node's own storage makes receipts atomic). */
  storage: Storage;
  /** Hands a received envelope to the local node; see {@link DeliverFn}. */
  deliver: DeliverFn;
  /** Told about envelopes `deliver` refused for good (they are acknowledged and dropped). */
  onDeadLetter?: (envelope: Envelope, fromNode: string, error: unknown) => void;
  /** Largest WebSocket message in either direction. Default 1 MiB; must agree across nodes. */
  maxPayload?: number;
  /** Most envelopes per batch frame. Default 100 (at most 1000). */
  batchMaxEnvelopes?: number;
  /** Ping interval; a peer silent for two intervals is cut off. Default 15 s. */
  heartbeatMs?: number;
  /** Stop sending above this many unsent bytes, stop reading above this many undelivered. Default 4 MiB. */
  maxBufferedBytes?: number;
  /** Accepted clock difference in handshakes (and how long a signed handshake's nonce is remembered). Default 60 s. */
  maxClockSkewMs?: number;
  /** Reconnect backoff bounds. Defaults 100 ms and 5 s. */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** fsync outbox and inbox writes. Default `false` (survives SIGKILL, not power loss). */
  sync?: boolean;
  /**
   * Most envelopes kept unacknowledged for one peer (while it is down or slow). Default
   * 10 000. A send beyond it waits `outboxWaitMs`, then fails with `OUTBOX_FULL` (retryable).
   */
  maxOutboxEntries?: number;
  /** Most envelope bytes kept unacknowledged for one peer. Default 64 MiB (at least `maxPayload`). */
  maxOutboxBytes?: number;
  /** How long a send to a full outbox waits for the peer to make room. Default 0: fails at once. */
  outboxWaitMs?: number;
  /** Refused envelopes remembered in storage (a ring, summaries only). Default 1000. */
  maxDeadLetters?: number;
  /** Time for handshake timestamps, heartbeats, backoff and close grace. Default the wall clock. */
  clock?: Clock;
  /**
   * TLS: with `cert` and `key` the listener is `wss://`; `wss://` peers are verified against
   * `ca` (default the system's CAs). The sealed-frame protocol runs unchanged inside it.
   * See {@link WsTlsOptions}.
   */
  tls?: WsTlsOptions;
}

/** {@link WsTransportOptions} with every default applied and the secret turned into a key. */
type ResolvedWsTransportOptions = Required<Omit<WsTransportOptions, 'listen' | 'onDeadLetter' | 'secret' | 'tls'>> & {
  listen: { host: string; port: number } | undefined;
  onDeadLetter: WsTransportOptions['onDeadLetter'];
  tls: ResolvedTls | undefined;
  key: Buffer;
};

/** Counters of everything a hostile or broken peer can cause, and of normal traffic. */
export interface WsTransportStats {
  /** Inbound connections that passed the handshake. */
  accepted: number;
  rejected: { unauthorized: number; badProtocol: number; badRequest: number };
  closed: {
    malformed: number;
    oversized: number;
    fragmented: number;
    protocol: number;
    deadPeer: number;
    impostor: number;
    superseded: number;
    deliverFailed: number;
    /** A frame whose tag did not verify: altered, injected, replayed or reordered on the way. */
    forged: number;
    /** An inbound connection whose first frame was not a sealed hello (a replayed handshake), or none came in time. */
    unproven: number;
  };
  framesIn: number;
  framesOut: number;
  delivered: number;
  duplicates: number;
  deadLetters: number;
  /** Envelopes a peer acknowledged as refused for good (its dead letters). */
  refusedByPeer: number;
  epochResets: number;
  reconnects: number;
}

/** A {@link Transport} over WebSocket. Create with {@link createWsTransport}. */
export interface WsTransport extends Transport {
  /** Where it listens, when it does. */
  readonly address: { host: string; port: number; url: string } | undefined;
  /**
   * Dials `nodeId` at `url` from now on (a peer learnt after start, or one that moved).
   * Mail for it then travels on this node's own connection rather than on the peer's.
   */
  addPeer(nodeId: string, url: string): void;
  stats(): WsTransportStats;
  /** The envelopes this node refused for good, as remembered in its storage (oldest first). */
  deadLetters(): Promise<DeadLetter[]>;
}

interface Conn {
  ws: WebSocket;
  remote: string;
  seal: FrameSeal;
  /** Sealed frames came from it: outbound at once (the listener proved itself), inbound after its hello. */
  proven: boolean;
  /** Got a pong or a message since the last ping. */
  alive: boolean;
  lastBuffered: number;
  /** Bytes of received batches not yet delivered (reading pauses above the limit). */
  backlog: number;
  /** Highest seq sent on this connection while it is the peer's channel. */
  sentUpTo: number;
  blocked: boolean;
  closed: boolean;
  /** Envelopes received since the last acknowledgement went out, and the one held back. */
  unacked: number;
  heldAck: { cursor: InboxCursor; cancel: () => void } | undefined;
}

/** Received batches of one sender waiting for delivery, and the loop delivering them. */
interface InboundQueue {
  frames: Array<{ conn: Conn; frame: BatchFrame; bytes: number }>;
  draining: Promise<void> | undefined;
}

interface Peer {
  nodeId: string;
  url: string | undefined;
  out: Conn | undefined;
  dialing: WebSocket | undefined;
  inbound: Conn[];
  /** Dials that failed since the last connection: the attempt number of the backoff. */
  failedDials: number;
  cancelRetry: (() => void) | undefined;
  pumpScheduled: boolean;
  lastError: string | undefined;
}

// ws ≥ 8.21 bounds fragments per message and receive-buffer chunks; legitimate peers send
// every message as one frame, so a handful of fragments is already suspicious.
const MAX_FRAGMENTS = 64;
const MAX_BUFFERED_CHUNKS = 8192;
const HANDSHAKE_TIMEOUT_MS = 10_000;
// Queued frames of one connection are delivered and recorded together up to this many
// envelopes (five default frames): under load, one cursor write and one acknowledgement per
// five frames instead of per frame (15-20% of the throughput of a burst). What a receiver
// crash can make come again stays within this many envelopes, far inside a run's
// deduplication window (SEEN_RING, 4096 ids).
export const MERGE_MAX_ENVELOPES = 500;
const CLOSE_GRACE_MS = 1_000;
/** Envelopes after which a receiver acknowledges at once, and how long it holds back an acknowledgement otherwise. */
const ACK_EVERY = 100;
const ACK_DELAY_MS = 5;
const WS_ERRORS: Record<string, keyof WsTransportStats['closed']> = {
  WS_ERR_UNSUPPORTED_MESSAGE_LENGTH: 'oversized',
  WS_ERR_TOO_MANY_BUFFERED_PARTS: 'fragmented',
};

function assertPeer(self: string, id: string, url: unknown, tls: ResolvedTls | undefined): asserts url is string {
  assertNodeId(id, 'peer id');
  if (id === self) throw new TypeError(`peer "${id}" is this node; local envelopes are routed by the node, not the transport`);
  if (typeof url !== 'string' || !/^wss?:\/\/[^\s]+$/.test(url)) throw new TypeError(`peer "${id}" needs a ws:// or wss:// url, not "${String(url)}"`);
  if (tls?.requirePeers && !url.startsWith('wss://')) throw new TypeError(`peer "${id}" at ${url} is not TLS, and tls.requirePeers asks for wss:// urls only`);
}

function resolve(options: WsTransportOptions): ResolvedWsTransportOptions {
  if (!options || typeof options !== 'object') throw new TypeError('createWsTransport(options) needs { nodeId, secret, storage, deliver }');
  assertNodeId(options.nodeId);
  const key = secretKey(options.secret);
  if (typeof options.storage?.write !== 'function') throw new TypeError('createWsTransport({ storage }) needs a Storage for the outbox');
  if (typeof options.deliver !== 'function') throw new TypeError('createWsTransport({ deliver }) needs a function handing envelopes to the node');
  const tls = options.tls === undefined ? undefined : resolveTls(options.tls, options.listen !== undefined);
  const peers = options.peers ?? {};
  for (const [id, url] of Object.entries(peers)) assertPeer(options.nodeId, id, url, tls);
  const int = (name: string, value: number | undefined, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER) => {
    const v = value ?? fallback;
    if (!Number.isInteger(v) || v < min || v > max) throw new TypeError(`${name} must be an integer in [${min}, ${max}], not ${String(v)}`);
    return v;
  };
  const listen = options.listen && { host: options.listen.host ?? '127.0.0.1', port: int('listen.port', options.listen.port, 0, 0, 65535) };
  const reconnectMinMs = int('reconnectMinMs', options.reconnectMinMs, 100, 1);
  return {
    nodeId: options.nodeId,
    key,
    listen,
    peers: { ...peers },
    storage: options.storage,
    deliver: options.deliver,
    onDeadLetter: options.onDeadLetter,
    maxPayload: int('maxPayload', options.maxPayload, DEFAULT_MAX_FRAME_BYTES, 4096),
    batchMaxEnvelopes: int('batchMaxEnvelopes', options.batchMaxEnvelopes, 100, 1, MAX_BATCH_ITEMS),
    heartbeatMs: int('heartbeatMs', options.heartbeatMs, 15_000, 10),
    maxBufferedBytes: int('maxBufferedBytes', options.maxBufferedBytes, 4 * 1024 * 1024, 1),
    maxClockSkewMs: int('maxClockSkewMs', options.maxClockSkewMs, 60_000, 1),
    reconnectMinMs,
    reconnectMaxMs: int('reconnectMaxMs', options.reconnectMaxMs, 5_000, reconnectMinMs),
    sync: options.sync ?? false,
    clock: options.clock ?? systemClock,
    maxOutboxEntries: int('maxOutboxEntries', options.maxOutboxEntries, DEFAULT_OUTBOX_LIMITS.maxEntries, 1),
    maxOutboxBytes: int('maxOutboxBytes', options.maxOutboxBytes, Math.max(DEFAULT_OUTBOX_LIMITS.maxBytes, options.maxPayload ?? 0), options.maxPayload ?? DEFAULT_MAX_FRAME_BYTES),
    outboxWaitMs: int('outboxWaitMs', options.outboxWaitMs, DEFAULT_OUTBOX_LIMITS.waitMs, 0),
    maxDeadLetters: int('maxDeadLetters', options.maxDeadLetters, 1000, 0),
    tls,
  };
}

/**
 * Starts a WebSocket transport: listens (when `listen` is given), dials every peer, and
 * resends whatever a previous process left unacknowledged in the outbox.
 */
export async function createWsTransport(options: WsTransportOptions): Promise<WsTransport> {
  const o = resolve(options);
  const { clock, nodeId } = o;
  let status: TransportStatus = 'open';
  let closing: Promise<void> | undefined;
  const stats: WsTransportStats = {
    accepted: 0,
    rejected: { unauthorized: 0, badProtocol: 0, badRequest: 0 },
    closed: { malformed: 0, oversized: 0, fragmented: 0, protocol: 0, deadPeer: 0, impostor: 0, superseded: 0, deliverFailed: 0, forged: 0, unproven: 0 },
    framesIn: 0,
    framesOut: 0,
    delivered: 0,
    duplicates: 0,
    deadLetters: 0,
    refusedByPeer: 0,
    epochResets: 0,
    reconnects: 0,
  };
  const peers = new Map<string, Peer>();
  const conns = new Set<Conn>();
  const queues = new Map<string, InboundQueue>();
  const writes = createMergedWrites(o.storage, o.sync);
  const inbox = createInbox(o.storage, o.sync, { maxDeadLetters: o.maxDeadLetters, now: () => clock.now(), writes });
  const outbox = await createOutbox({
    storage: o.storage,
    sync: o.sync,
    writes,
    onDurable: (to) => schedulePump(peerOf(to)),
    maxEntries: o.maxOutboxEntries,
    maxBytes: o.maxOutboxBytes,
    waitMs: o.outboxWaitMs,
    setTimer: (fn, ms) => clock.setTimer(fn, ms),
  });
  const limits: WsLimits = { maxPayload: o.maxPayload, maxFragments: MAX_FRAGMENTS, maxBufferedChunks: MAX_BUFFERED_CHUNKS, perMessageDeflate: false };

  function peerOf(id: string): Peer {
    let peer = peers.get(id);
    if (!peer) {
      peer = { nodeId: id, url: o.peers[id], out: undefined, dialing: undefined, inbound: [], failedDials: 0, cancelRetry: undefined, pumpScheduled: false, lastError: undefined };
      peers.set(id, peer);
    }
    return peer;
  }

  // ---- sending ----------------------------------------------------------------------

  // One channel per direction keeps per-pair order: our own dialled connection when we
  // know the peer's url, otherwise the newest connection it opened to us.
  const channel = (peer: Peer) => (peer.url ? peer.out : peer.inbound.at(-1));

  function useAsChannel(peer: Peer, conn: Conn) {
    conn.sentUpTo = outbox.ackedUpTo(peer.nodeId); // resend everything not acknowledged
    schedulePump(peer);
  }

  function schedulePump(peer: Peer) {
    if (peer.pumpScheduled) return;
    peer.pumpScheduled = true;
    // Entries become durable a write at a time (the outbox's, or a run's batch committing
    // its reservations), all in one callback: a microtask after it gathers them into as few
    // frames as possible and sends them at once, not on the event loop's next turn (no
    // measurable change of the round trip, but nothing waits behind other I/O callbacks).
    queueMicrotask(() => {
      peer.pumpScheduled = false;
      pump(peer);
    });
  }

  function pump(peer: Peer) {
    const conn = channel(peer);
    if (!conn || conn.closed || status !== 'open' || conn.ws.readyState !== WebSocket.OPEN) return;
    const { entries, from } = outbox.sendable(peer.nodeId, conn.sentUpTo);
    let i = from;
    while (i < entries.length) {
      if (conn.ws.bufferedAmount > o.maxBufferedBytes) {
        conn.blocked = true; // resumed by the send callback of a frame that got out
        return;
      }
      const items: OutboxEntry[] = [];
      let size = BATCH_OVERHEAD_BYTES + MAC_BYTES;
      while (i < entries.length && items.length < o.batchMaxEnvelopes) {
        const next = entries[i]!.bytes.byteLength + ITEM_OVERHEAD_BYTES;
        if (items.length > 0 && size + next > o.maxPayload) break;
        items.push(entries[i++]!);
        size += next;
      }
      conn.ws.send(conn.seal.sealTail(encodeBatch(outbox.epoch, items, MAC_BYTES)), (error) => {
        if (!error && conn.blocked) {
          conn.blocked = false;
          schedulePump(peer);
        }
      });
      conn.sentUpTo = items.at(-1)!.seq;
      stats.framesOut++;
    }
  }

  function onAck(conn: Conn, frame: Extract<Frame, { t: 'ack' }>) {
    if (frame.epoch !== outbox.epoch) return; // for an earlier incarnation of our outbox
    if (frame.upTo > outbox.durable(conn.remote)) return violate(conn, 1008, 'ack beyond what was sent', 'malformed');
    if (frame.refused?.length) {
      stats.refusedByPeer += frame.refused.length;
      peerOf(conn.remote).lastError = `refused ${frame.refused.length} envelope(s) for good (seq ${frame.refused.join(', ')})`;
    }
    outbox.ack(conn.remote, frame.upTo);
  }

  // ---- receiving --------------------------------------------------------------------

  function onMessage(conn: Conn, data: RawData, isBinary: boolean) {
    conn.alive = true;
    if (conn.closed) return;
    stats.framesIn++;
    const bytes = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    if (!isBinary) return violate(conn, 1003, 'binary frames only', 'malformed');
    // Before decoding anything: bytes not sealed for this connection are nobody's to parse.
    const opened = conn.seal.open(bytes);
    if (!opened) return violate(conn, 1008, 'bad frame tag', conn.proven ? 'forged' : 'unproven');
    let frame: Frame;
    try {
      frame = decodeFrame(opened, o.maxPayload);
    } catch (error) {
      return isTroupeError(error, ErrorCode.FRAME_TOO_LARGE) ? violate(conn, 1009, 'frame too large', 'oversized') : violate(conn, 1008, 'malformed frame', 'malformed');
    }
    if (!conn.proven) return frame.t === 'hello' ? prove(conn) : violate(conn, 1008, 'hello expected', 'unproven');
    if (frame.t === 'hello') return violate(conn, 1008, 'unexpected hello', 'malformed');
    if (frame.t === 'ack') return onAck(conn, frame);
    conn.backlog += bytes.byteLength;
    if (conn.backlog > o.maxBufferedBytes && !conn.ws.isPaused) conn.ws.pause();
    let queue = queues.get(conn.remote);
    if (!queue) queues.set(conn.remote, (queue = { frames: [], draining: undefined }));
    queue.frames.push({ conn, frame, bytes: bytes.byteLength });
    queue.draining ??= drain(conn.remote, queue);
  }

  /**
   * Batches of one sender are delivered strictly one after another, across connections.
   * Frames of one connection that queued up while the previous ones were being delivered
   * are taken together, up to {@link MERGE_MAX_ENVELOPES}: one storage batch and one
   * acknowledgement for all of them.
   */
  async function drain(remote: string, queue: InboundQueue) {
    while (queue.frames.length > 0) {
      const first = queue.frames[0]!;
      let n = 1;
      let count = first.frame.items.length;
      for (; n < queue.frames.length; n++) {
        const next = queue.frames[n]!;
        if (next.conn !== first.conn || next.frame.epoch !== first.frame.epoch || count + next.frame.items.length > MERGE_MAX_ENVELOPES) break;
        count += next.frame.items.length;
      }
      const group = queue.frames.splice(0, n);
      const frame: BatchFrame = n === 1 ? first.frame : { t: 'batch', epoch: first.frame.epoch, items: group.flatMap((g) => g.frame.items) };
      // decodeFrame checked every envelope against the envelope rule: each is within its frame's size.
      let checkedWithin = 0;
      for (const g of group) checkedWithin = Math.max(checkedWithin, g.bytes);
      try {
        await deliverBatch(first.conn, frame, checkedWithin);
      } catch {
        // deliverBatch reports its own failures; the frames come again on a new connection
      }
      for (const g of group) {
        g.conn.backlog -= g.bytes;
        if (g.conn.ws.isPaused && g.conn.backlog <= o.maxBufferedBytes / 2) g.conn.ws.resume();
      }
    }
    queue.draining = undefined;
    if (queues.get(remote) === queue) queues.delete(remote);
  }

  async function deliverBatch(conn: Conn, frame: BatchFrame, checkedWithin: number) {
    if (conn.closed || status !== 'open') return; // these come again on the next connection
    const outcome = await inbox.receive(conn.remote, { epoch: frame.epoch, items: frame.items, checkedWithin }, { deliver: o.deliver, onDeadLetter: o.onDeadLetter, proceed: () => status === 'open' });
    stats.delivered += outcome.delivered;
    stats.duplicates += outcome.duplicates;
    stats.deadLetters += outcome.deadLetters;
    if (outcome.epochReset) stats.epochResets++;
    if (outcome.stopped) return;
    // Before a close for a failed delivery it goes at once: what was delivered is not resent.
    sendAck(conn, outcome.cursor, outcome.refused, frame.items.length, outcome.failure !== undefined);
    if (outcome.failure === undefined) return;
    peerOf(conn.remote).lastError = `deliver failed: ${(outcome.failure as Error)?.message ?? String(outcome.failure)}`;
    // Closing makes the sender reconnect with backoff and resend from what we acknowledged.
    if (status === 'open') violate(conn, 1011, 'delivery failed, retry later', 'deliverFailed');
  }

  /**
   * Acknowledges at once after {@link ACK_EVERY} envelopes or a refusal, otherwise at most
   * {@link ACK_DELAY_MS} later (delayed acknowledgement, as TCP's): in a stream of single
   * envelopes answered one by one, an acknowledgement per envelope was a frame each way on
   * every round trip's path, sealed, sent, opened and parsed while the answer waited.
   */
  function sendAck(conn: Conn, cursor: InboxCursor, refused: readonly number[], received: number, now: boolean) {
    if (conn.ws.readyState !== WebSocket.OPEN || conn.closed) return;
    conn.unacked += received;
    if (!now && refused.length === 0 && conn.unacked < ACK_EVERY) {
      if (conn.heldAck) conn.heldAck.cursor = cursor;
      else conn.heldAck = { cursor, cancel: clock.setTimer(() => flushAck(conn), ACK_DELAY_MS) };
      return;
    }
    takeHeldAck(conn);
    writeAck(conn, cursor, refused);
  }

  /** The held acknowledgement, if any, no longer held (its timer cancelled). */
  function takeHeldAck(conn: Conn) {
    const held = conn.heldAck;
    conn.heldAck = undefined;
    held?.cancel();
    return held;
  }

  function flushAck(conn: Conn) {
    const held = takeHeldAck(conn);
    if (held && conn.ws.readyState === WebSocket.OPEN && !conn.closed) writeAck(conn, held.cursor, []);
  }

  function writeAck(conn: Conn, cursor: InboxCursor, refused: readonly number[]) {
    conn.unacked = 0;
    conn.ws.send(conn.seal.seal(encodeAck(cursor.epoch, cursor.seq, refused)));
    stats.framesOut++;
  }

  // ---- connections ------------------------------------------------------------------

  function violate(conn: Conn, code: number, reason: string, kind: keyof WsTransportStats['closed']) {
    if (conn.closed) return;
    stats.closed[kind]++;
    closeConn(conn, code, reason);
  }

  function closeConn(conn: Conn, code: number, reason: string) {
    conn.closed = true;
    if (conn.ws.readyState === WebSocket.CLOSED) return;
    conn.ws.close(code, reason);
    // A peer that never answers the close handshake is cut off instead of waited for.
    const cancel = clock.setTimer(() => conn.ws.terminate(), CLOSE_GRACE_MS);
    conn.ws.once('close', cancel);
  }

  function attach(ws: WebSocket, remote: string, outbound: boolean, keys: SessionKeys): Conn {
    const conn: Conn = { ws, remote, seal: createFrameSeal(keys, outbound ? 'client' : 'server'), proven: outbound, alive: true, lastBuffered: 0, backlog: 0, sentUpTo: 0, blocked: false, closed: false, unacked: 0, heldAck: undefined };
    conns.add(conn);
    const peer = peerOf(remote);
    let cancelProof: (() => void) | undefined;
    ws.on('message', (data, isBinary) => onMessage(conn, data, isBinary));
    ws.on('pong', () => (conn.alive = true));
    ws.on('error', (error: Error & { code?: string }) => {
      // ws already answers a protocol violation with 1002/1008/1009 and closes; count it.
      const kind = error.code ? (WS_ERRORS[error.code] ?? (error.code.startsWith('WS_ERR_') ? 'protocol' : undefined)) : undefined;
      if (kind) violate(conn, 1008, error.message, kind);
      else peer.lastError = error.message;
    });
    ws.on('close', () => {
      conn.closed = true;
      conns.delete(conn);
      cancelProof?.();
      takeHeldAck(conn);
      if (outbound) {
        if (peer.out === conn) peer.out = undefined;
        scheduleReconnect(peer);
      } else {
        peer.inbound = peer.inbound.filter((c) => c !== conn);
        const now = channel(peer);
        if (now && !peer.url) useAsChannel(peer, now);
      }
    });
    if (outbound) {
      // The listener's challenge is answered before anything else goes out.
      ws.send(conn.seal.seal(encodeHello()));
      peer.out = conn;
      peer.failedDials = 0;
      peer.lastError = undefined;
      useAsChannel(peer, conn);
    } else {
      // Until its hello, an inbound connection is nobody's channel and supersedes nothing:
      // a replayed handshake must not be able to push the real peer's connection out.
      cancelProof = clock.setTimer(() => {
        if (!conn.proven) violate(conn, 1008, 'no hello in time', 'unproven');
      }, HANDSHAKE_TIMEOUT_MS);
    }
    return conn;
  }

  /** An inbound connection's hello verified: it becomes one of the peer's connections. */
  function prove(conn: Conn) {
    const peer = peerOf(conn.remote);
    conn.proven = true;
    stats.accepted++;
    // A node keeps one connection to us; an older one is a leftover of a dead process.
    for (const old of peer.inbound) violate(old, 4000, 'superseded by a newer connection', 'superseded');
    peer.inbound.push(conn);
    if (!peer.url) useAsChannel(peer, conn);
  }

  function dial(peer: Peer) {
    if (status !== 'open' || !peer.url || peer.out || peer.dialing) return;
    let impostor = false;
    const { ws, keys } = dialAuthenticated({
      url: peer.url,
      key: o.key,
      from: nodeId,
      to: peer.nodeId,
      now: clock.now(),
      limits,
      handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
      ...(o.tls ? { tls: o.tls } : {}),
      onImpostor() {
        impostor = true;
        stats.closed.impostor++;
        peer.lastError = `${peer.url} did not prove to be node "${peer.nodeId}" holding the shared secret`;
      },
    });
    peer.dialing = ws;
    ws.once('open', () => {
      peer.dialing = undefined;
      attach(ws, peer.nodeId, true, keys()!); // 'open' follows a verified 'upgrade' only
    });
    ws.on('error', (error) => {
      if (!impostor && peer.dialing === ws) peer.lastError = describeDialError(peer.url!, error);
    });
    ws.once('close', () => {
      if (peer.dialing !== ws) return;
      peer.dialing = undefined;
      scheduleReconnect(peer);
    });
  }

  function scheduleReconnect(peer: Peer) {
    if (status !== 'open' || peer.cancelRetry || !peer.url) return;
    stats.reconnects++;
    peer.failedDials += 1;
    // The shared backoff; its jitter (a hash of both node ids and the attempt, see
    // core/backoff.ts) keeps a cluster restarting together from dialling in lockstep.
    const delay = backoffDelay({ initialDelayMs: o.reconnectMinMs, maxDelayMs: o.reconnectMaxMs, factor: 2, jitter: 0.5 }, peer.failedDials, jitterUnit(nodeId, peer.nodeId, peer.failedDials));
    peer.cancelRetry = clock.setTimer(() => {
      peer.cancelRetry = undefined;
      dial(peer);
    }, delay);
  }

  // ---- listening --------------------------------------------------------------------

  let listener: AuthenticatedListener | undefined;
  if (o.listen) {
    listener = await listenAuthenticated({
      ...o.listen,
      key: o.key,
      nodeId,
      now: () => clock.now(),
      maxSkewMs: o.maxClockSkewMs,
      limits,
      handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
      isOpen: () => status === 'open',
      onConnection: (ws, node, keys) => attach(ws, node, false, keys),
      onRejected: (kind) => stats.rejected[kind]++,
      ...(o.tls ? { tls: o.tls } : {}),
    });
  }

  // ---- liveness ---------------------------------------------------------------------

  let cancelBeat = clock.setTimer(function beat() {
    for (const conn of conns) {
      if (conn.ws.readyState !== WebSocket.OPEN) continue;
      // Paused reading hides pongs, and a peer draining our data is alive anyway.
      const draining = conn.ws.bufferedAmount < conn.lastBuffered;
      conn.lastBuffered = conn.ws.bufferedAmount;
      if (!conn.alive && !draining && !conn.ws.isPaused) {
        stats.closed.deadPeer++;
        conn.closed = true;
        conn.ws.terminate();
        continue;
      }
      conn.alive = false;
      conn.ws.ping();
    }
    cancelBeat = clock.setTimer(beat, o.heartbeatMs);
  }, o.heartbeatMs);

  // ---- the transport ----------------------------------------------------------------

  for (const id of Object.keys(o.peers)) dial(peerOf(id));
  for (const id of outbox.destinations()) if (outbox.unacked(id).length > 0) peerOf(id);

  const maxEnvelopeBytes = o.maxPayload - BATCH_OVERHEAD_BYTES - ITEM_OVERHEAD_BYTES - MAC_BYTES;
  const closedError = () => new TroupeError(ErrorCode.NODE_CLOSED, `transport of node "${nodeId}" is ${status}`);

  /** The checks of a send, and the envelope's bytes; throws what `send` rejects with. */
  const admissible = (toNode: string, envelope: Envelope): Uint8Array => {
    if (status !== 'open') throw closedError();
    assertNodeId(toNode, 'destination node');
    if (toNode === nodeId) throw new TypeError(`send(toNode) targets this node "${nodeId}"; local envelopes are routed by the node`);
    // The rule itself, not its zod wrapper: a burst of sends is checked without a result each.
    if (envelopeIssue(envelope)) parseEnvelope(envelope); // throws INVALID_ENVELOPE naming the field
    const bytes = encodeEnvelope(envelope);
    if (bytes.byteLength > maxEnvelopeBytes) {
      // It could never fit a frame; refusing now beats an outbox entry stuck forever.
      throw new TroupeError(ErrorCode.FRAME_TOO_LARGE, `envelope of ${bytes.byteLength} bytes exceeds the transport limit of ${maxEnvelopeBytes}`, {
        details: { size: bytes.byteLength, limit: maxEnvelopeBytes },
      });
    }
    peerOf(toNode);
    return bytes;
  };

  const transport: WsTransport = {
    nodeId,
    get status() {
      return status;
    },
    address: listener?.address,
    send(toNode, envelope) {
      let bytes: Uint8Array;
      try {
        bytes = admissible(toNode, envelope);
      } catch (error) {
        return Promise.reject(error);
      }
      // The promise of the write that takes it, shared by the sends of that write.
      return outbox.append(toNode, bytes);
    },
    reserve(toNode, envelope) {
      let bytes: Uint8Array;
      try {
        bytes = admissible(toNode, envelope);
      } catch {
        return undefined; // send() says what is wrong with it
      }
      return outbox.reserve(toNode, bytes);
    },
    addPeer(id, url) {
      assertPeer(nodeId, id, url, o.tls);
      if (status !== 'open') throw closedError();
      const peer = peerOf(id);
      if (peer.url === url) return;
      o.peers[id] = peer.url = url;
      // A live or half-open connection to the old url is dropped; its close handler redials.
      if (peer.out) closeConn(peer.out, 1001, 'peer moved');
      else if (peer.dialing) peer.dialing.terminate();
      else {
        peer.cancelRetry?.();
        peer.cancelRetry = undefined;
        dial(peer);
      }
    },
    flushed: (toNode) => outbox.flushed(toNode),
    peers(): PeerStatus[] {
      return [...peers.values()].map((peer) => {
        const state: PeerStatus['state'] =
          status !== 'open' ? 'closed' : peer.url ? (peer.out ? 'open' : peer.dialing ? 'connecting' : 'backoff') : peer.inbound.length > 0 ? 'open' : 'waiting';
        return {
          nodeId: peer.nodeId,
          ...(peer.url ? { url: peer.url } : {}),
          state,
          inbound: peer.inbound.length,
          unacked: outbox.unacked(peer.nodeId).length,
          assigned: outbox.durable(peer.nodeId),
          acked: outbox.ackedUpTo(peer.nodeId),
          ...(peer.lastError ? { lastError: peer.lastError } : {}),
        };
      });
    },
    stats: () => structuredClone(stats),
    deadLetters: () => inbox.deadLetters(),
    close() {
      closing ??= (async () => {
        status = 'closing';
        cancelBeat();
        for (const peer of peers.values()) {
          peer.cancelRetry?.();
          peer.cancelRetry = undefined;
          peer.dialing?.terminate();
        }
        const gone = [...conns].map((c) => new Promise<void>((ok) => (c.ws.readyState === WebSocket.CLOSED ? ok() : c.ws.once('close', () => ok()))));
        for (const conn of conns) {
          flushAck(conn); // a held acknowledgement spares the peer resending what we have
          closeConn(conn, 1001, 'node closing');
        }
        await listener?.close();
        await Promise.all(gone);
        await Promise.all([...queues.values()].map((q) => q.draining));
        await outbox.close(closedError());
        status = 'closed';
      })();
      return closing;
    },
    [Symbol.asyncDispose]() {
      return transport.close();
    },
  };
  return transport;
}

/** Options of {@link wsTransport}: those of {@link WsTransportOptions} the node does not supply. */
export type WsTransportFactoryOptions = Omit<WsTransportOptions, 'nodeId' | 'storage' | 'deliver'>;

/**
 * The WebSocket transport as `createNode({ transport: wsTransport({ secret, listen, peers }) })`
 * expects it: the node supplies its id, its storage (so outbox and cursors live beside the
 * runs) and its `deliver`. `created` resolves with the transport (for `address`, `peers()`,
 * `stats()`) once the node made it; one factory serves one node.
 */
export function wsTransport(options: WsTransportFactoryOptions): TransportFactory & { readonly created: Promise<WsTransport> } {
  let settle!: { resolve(t: WsTransport): void; reject(e: unknown): void };
  const created = new Promise<WsTransport>((resolve, reject) => (settle = { resolve, reject }));
  created.catch(() => {}); // the node's createNode already reports a failure
  let used = false;
  const factory = async (bindings: TransportBindings): Promise<WsTransport> => {
    if (used) throw new TypeError('a wsTransport(...) factory serves one node; call wsTransport(...) again for another');
    used = true;
    try {
      const transport = await createWsTransport({ ...options, nodeId: bindings.nodeId, storage: bindings.storage, deliver: (envelope, fromNode, receipt) => bindings.deliver(envelope, fromNode, receipt) });
      settle.resolve(transport);
      return transport;
    } catch (error) {
      settle.reject(error);
      throw error;
    }
  };
  return Object.assign(factory, { created });
}
