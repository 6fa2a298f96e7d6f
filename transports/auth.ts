import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer, type ServerOptions } from 'ws';
import { assertNodeId, NODE_ID } from '../core/ids.js';
import { ErrorCode, TroupeError } from '../core/errors.js';
import { deriveSessionKeys, type SessionKeys } from './session.js';
import type { ResolvedTls } from './tls.js';

/**
 * Mutual authentication of a WebSocket handshake with a shared secret, both ends. The
 * dialling node signs who it is, whom it dials, when and a fresh nonce; the listener checks
 * that in its HTTP `upgrade` handler before any WebSocket exists, then answers in its 101
 * response with a fresh random challenge of its own and a proof that it knows the secret
 * (bound to both nonces). Both ends derive the connection's frame keys from the two nonces
 * (transports/session.ts), and the dialling node's first frame must be sealed with them.
 *
 * The challenge is what makes a recorded handshake worthless: replayed, even to a listener
 * that restarted and forgot the nonce it had seen, it meets a challenge it was not made for,
 * and whoever replays it cannot seal a single frame. The signed timestamp and the nonce cache
 * stay as a cheap first filter (a replay inside the window is refused before any WebSocket).
 */

/** The WebSocket subprotocol both ends must speak (v2: challenge and sealed frames). */
export const PROTOCOL = 'troupe.v2';

/** Header names of the handshake. */
export const HEADERS = {
  node: 'x-troupe-node',
  ts: 'x-troupe-ts',
  nonce: 'x-troupe-nonce',
  sig: 'x-troupe-sig',
  proof: 'x-troupe-proof',
  challenge: 'x-troupe-challenge',
} as const;

// Node ids follow the kernel's one rule (core/ids.ts), re-exported for the transport's users.
export { NODE_ID, assertNodeId };

const NONCE = /^[0-9a-f]{32}$/;
const SIG = /^[0-9a-f]{64}$/;
const TS = /^[0-9]{1,16}$/;


/** Normalises the shared secret; short secrets are refused because HMAC is only as strong as its key. */
export function secretKey(secret: string | Uint8Array): Buffer {
  const key = typeof secret === 'string' ? Buffer.from(secret, 'utf8') : secret instanceof Uint8Array ? Buffer.from(secret) : undefined;
  if (!key || key.byteLength < 16) throw new TypeError('secret must be a string or Uint8Array of at least 16 bytes');
  return key;
}

const mac = (key: Buffer, text: string) => createHmac('sha256', key).update(text).digest('hex');

// The target node is signed too, so a captured handshake cannot be replayed to another
// listener (nonces are remembered per listener only). Client and server strings differ in
// their second line, so one can never stand in for the other.
const clientText = (from: string, to: string, ts: string, nonce: string) => `${PROTOCOL}\nclient\n${from}\n${to}\n${ts}\n${nonce}`;
const serverText = (server: string, client: string, nonce: string, challenge: string) => `${PROTOCOL}\nserver\n${server}\n${client}\n${nonce}\n${challenge}`;

function equalHex(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'));
}

/** The headers a node sends when dialling `to`. */
export function clientHandshake(key: Buffer, from: string, to: string, now: number, nonce = randomBytes(16).toString('hex')): Record<string, string> {
  const ts = String(Math.trunc(now));
  return { [HEADERS.node]: from, [HEADERS.ts]: ts, [HEADERS.nonce]: nonce, [HEADERS.sig]: mac(key, clientText(from, to, ts, nonce)) };
}

/** A fresh listener challenge (one per connection). */
export const newChallenge = (): string => randomBytes(16).toString('hex');

/** The proof a listener returns in its 101 response to the client that sent `nonce`, with its `challenge`. */
export function serverProof(key: Buffer, server: string, client: string, nonce: string, challenge: string): string {
  return mac(key, serverText(server, client, nonce, challenge));
}

/**
 * The listener's challenge when a 101 response came from `expected`, a holder of the secret
 * answering our `nonce`; `undefined` otherwise.
 */
export function verifyServerProof(key: Buffer, headers: IncomingHttpHeaders, expected: string, client: string, nonce: string): string | undefined {
  const node = headers[HEADERS.node];
  const proof = headers[HEADERS.proof];
  const challenge = headers[HEADERS.challenge];
  if (node !== expected || typeof proof !== 'string' || !SIG.test(proof) || typeof challenge !== 'string' || !NONCE.test(challenge)) return undefined;
  return equalHex(proof, serverProof(key, expected, client, nonce, challenge)) ? challenge : undefined;
}

/** The outcome of checking a client handshake. */
export type HandshakeVerdict =
  | { ok: true; node: string; nonce: string }
  /** `busy` means the replay cache is full: refuse for now rather than forget nonces. */
  | { ok: false; reason: 'missing' | 'malformed' | 'self' | 'stale' | 'signature' | 'replay' | 'busy' };

/** Options of {@link createHandshakeVerifier}. */
export interface HandshakeVerifierOptions {
  key: Buffer;
  /** The listening node: handshakes must be addressed to it. */
  nodeId: string;
  now(): number;
  /** Accepted distance between the client's timestamp and ours. Default 60 s. */
  maxSkewMs?: number;
  /** Most nonces remembered at once. Default 100 000. */
  maxNonces?: number;
}

/** Checks client handshakes and remembers their nonces long enough to refuse replays. */
export interface HandshakeVerifier {
  verify(headers: IncomingHttpHeaders): HandshakeVerdict;
}

/** Creates a {@link HandshakeVerifier} for the listener `nodeId`. */
export function createHandshakeVerifier(options: HandshakeVerifierOptions): HandshakeVerifier {
  const skew = options.maxSkewMs ?? 60_000;
  const maxNonces = options.maxNonces ?? 100_000;
  // Insertion order is expiry order (expiry = arrival + 2 skew), so pruning pops from the head.
  const seen = new Map<string, number>();
  const prune = (now: number) => {
    for (const [nonce, expires] of seen) {
      if (expires > now) break;
      seen.delete(nonce);
    }
  };
  return {
    verify(headers) {
      const node = headers[HEADERS.node];
      const ts = headers[HEADERS.ts];
      const nonce = headers[HEADERS.nonce];
      const sig = headers[HEADERS.sig];
      if (node === undefined || ts === undefined || nonce === undefined || sig === undefined) return { ok: false, reason: 'missing' };
      if (typeof node !== 'string' || !NODE_ID.test(node) || typeof ts !== 'string' || !TS.test(ts)) return { ok: false, reason: 'malformed' };
      if (typeof nonce !== 'string' || !NONCE.test(nonce) || typeof sig !== 'string' || !SIG.test(sig)) return { ok: false, reason: 'malformed' };
      if (node === options.nodeId) return { ok: false, reason: 'self' };
      if (!equalHex(sig, mac(options.key, clientText(node, options.nodeId, ts, nonce)))) return { ok: false, reason: 'signature' };
      const now = options.now();
      if (Math.abs(now - Number(ts)) > skew) return { ok: false, reason: 'stale' };
      // Only signed handshakes reach the cache, so strangers cannot fill it.
      prune(now);
      if (seen.has(nonce)) return { ok: false, reason: 'replay' };
      if (seen.size >= maxNonces) return { ok: false, reason: 'busy' };
      seen.set(nonce, now + 2 * skew);
      return { ok: true, node, nonce };
    },
  };
}

/** ws limits applied to both ends of every connection. */
export type WsLimits = Pick<ServerOptions, 'maxPayload' | 'maxFragments' | 'maxBufferedChunks'> & { perMessageDeflate: false };

/** Options of {@link listenAuthenticated}. */
export interface AuthenticatedListenerOptions {
  host: string;
  port: number;
  key: Buffer;
  nodeId: string;
  now(): number;
  maxSkewMs: number;
  limits: WsLimits;
  /** Whether new connections are still welcome (503 otherwise). */
  isOpen(): boolean;
  /**
   * A connection claiming to be `node` passed the handshake; `keys` seal its frames. It is
   * not proven yet: only a first frame sealed with `keys` shows the client answered our challenge.
   */
  onConnection(ws: WebSocket, node: string, keys: SessionKeys): void;
  onRejected(kind: 'unauthorized' | 'badProtocol' | 'badRequest'): void;
  handshakeTimeoutMs: number;
  /** Listen as HTTPS (`wss://`) with this identity; `requireClientCert` asks clients for one signed by `ca`. */
  tls?: ResolvedTls;
}

/** A listening HTTP server that upgrades only authenticated `troupe.v2` handshakes. */
export interface AuthenticatedListener {
  readonly address: { host: string; port: number; url: string };
  /** Stops listening and drops connections still in their handshake. */
  close(): Promise<void>;
}

function refuse(socket: Duplex, code: number, text: string) {
  socket.once('finish', () => socket.destroy());
  socket.end(`HTTP/1.1 ${code} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}

/**
 * Listens on `host:port` (failing with `LISTEN_FAILED`). Authentication happens in the HTTP
 * `upgrade` handler, before ws allocates anything for the connection; the 101 response
 * carries the listener's proof.
 */
export async function listenAuthenticated(o: AuthenticatedListenerOptions): Promise<AuthenticatedListener> {
  const verifier = createHandshakeVerifier({ key: o.key, nodeId: o.nodeId, now: o.now, maxSkewMs: o.maxSkewMs });
  const verdicts = new WeakMap<IncomingMessage, Extract<HandshakeVerdict, { ok: true }> & { challenge: string }>();
  const wss = new WebSocketServer({ noServer: true, clientTracking: false, ...o.limits, handleProtocols: (offered) => (offered.has(PROTOCOL) ? PROTOCOL : false) });
  wss.on('headers', (headers, req) => {
    const verdict = verdicts.get(req);
    if (verdict) {
      headers.push(`${HEADERS.node}: ${o.nodeId}`, `${HEADERS.challenge}: ${verdict.challenge}`, `${HEADERS.proof}: ${serverProof(o.key, o.nodeId, verdict.node, verdict.nonce, verdict.challenge)}`);
    }
  });
  wss.on('wsClientError', (_error, socket) => {
    o.onRejected('badRequest');
    refuse(socket, 400, 'Bad Request');
  });
  const timeouts = { headersTimeout: o.handshakeTimeoutMs, requestTimeout: o.handshakeTimeoutMs };
  const notUpgrade = (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(426, { connection: 'close', 'content-length': 0 }).end();
  };
  const identity = o.tls?.identity;
  // The same upgrade handler either way: TLS wraps the handshake, it does not replace it.
  const http = identity
    ? createHttpsServer(
        {
          ...timeouts,
          cert: identity.cert,
          key: identity.key,
          ...(o.tls!.ca ? { ca: o.tls!.ca } : {}),
          // Mutual TLS: a client without a certificate signed by `ca` never reaches the upgrade.
          ...(o.tls!.requireClientCert ? { requestCert: true, rejectUnauthorized: true } : {}),
          handshakeTimeout: o.handshakeTimeoutMs,
        },
        notUpgrade,
      )
    : createServer(timeouts, notUpgrade);
  http.on('clientError', (_error, socket) => socket.destroy());
  // A plaintext ws:// dial, a client that does not trust us, or one without a client certificate.
  http.on('tlsClientError', (_error: Error, socket: Duplex) => {
    o.onRejected('badRequest');
    socket.destroy();
  });
  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    if (!o.isOpen()) return refuse(socket, 503, 'Service Unavailable');
    const verdict = verifier.verify(req.headers);
    if (!verdict.ok) {
      o.onRejected('unauthorized');
      return verdict.reason === 'busy' ? refuse(socket, 503, 'Service Unavailable') : refuse(socket, 401, 'Unauthorized');
    }
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    if (!offered.includes(PROTOCOL)) {
      o.onRejected('badProtocol');
      return refuse(socket, 400, 'Bad Request');
    }
    const challenge = newChallenge();
    verdicts.set(req, { ...verdict, challenge });
    const keys = deriveSessionKeys(o.key, verdict.node, o.nodeId, verdict.nonce, challenge);
    wss.handleUpgrade(req, socket, head, (ws) => (o.isOpen() ? o.onConnection(ws, verdict.node, keys) : ws.terminate()));
  });
  await new Promise<void>((ok, fail) => {
    const onError = (cause: NodeJS.ErrnoException) => {
      const why = cause.code === 'EADDRINUSE' ? 'the port is in use (port 0 picks a free one)' : cause.message;
      fail(new TroupeError(ErrorCode.LISTEN_FAILED, `transport cannot listen on ${o.host}:${o.port}: ${why}`, { cause, details: { host: o.host, port: o.port } }));
    };
    http.once('error', onError);
    http.listen(o.port, o.host, () => {
      http.off('error', onError);
      ok();
    });
  });
  const bound = http.address() as AddressInfo;
  const host = bound.address.includes(':') ? `[${bound.address}]` : bound.address;
  return {
    address: { host: bound.address, port: bound.port, url: `${identity ? 'wss' : 'ws'}://${host}:${bound.port}` },
    async close() {
      await new Promise<void>((ok) => {
        http.close(() => ok());
        http.closeAllConnections();
      });
      wss.close();
    },
  };
}

/** Options of {@link dialAuthenticated}. */
export interface DialOptions {
  url: string;
  key: Buffer;
  from: string;
  to: string;
  now: number;
  limits: WsLimits;
  handshakeTimeoutMs: number;
  /** The listener could not prove it is `to` holding the secret; the socket is already dropped. */
  onImpostor(): void;
  /** For `wss://` urls: the CAs to verify the listener with (default the system's) and our client certificate. */
  tls?: ResolvedTls;
}

/**
 * Dials `to` at `url` with a signed handshake and hangs up unless the listener proves itself.
 * `keys()` are the connection's frame keys once it has (before `open` fires).
 */
export function dialAuthenticated(o: DialOptions): { ws: WebSocket; keys(): SessionKeys | undefined } {
  const headers = clientHandshake(o.key, o.from, o.to, o.now);
  const nonce = headers[HEADERS.nonce]!;
  // Server certificates are always verified (rejectUnauthorized is tls's default and never
  // turned off): the secret authenticates the node, the certificate keeps the path private.
  const tls = o.url.startsWith('wss://') && o.tls ? { ...(o.tls.ca ? { ca: o.tls.ca } : {}), ...(o.tls.identity ?? {}) } : {};
  const ws = new WebSocket(o.url, [PROTOCOL], { ...o.limits, ...tls, headers, handshakeTimeout: o.handshakeTimeoutMs, followRedirects: false });
  let keys: SessionKeys | undefined;
  ws.once('upgrade', (response) => {
    const challenge = verifyServerProof(o.key, response.headers, o.to, o.from, nonce);
    if (challenge) return void (keys = deriveSessionKeys(o.key, o.from, o.to, nonce, challenge));
    ws.terminate(); // still CONNECTING: 'open' never fires, 'error' and 'close' do
    o.onImpostor();
  });
  return { ws, keys: () => keys };
}
