import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { ErrorCode, TroupeError } from '../core/errors.js';

/** Hosts the inspector may listen on: loopback only (reads need no token, see {@link ACTION_PATH}). */
export const LOOPBACK_HOSTS = ['127.0.0.1', 'localhost', '::1'] as const;

/** One of {@link LOOPBACK_HOSTS}. */
export type LoopbackHost = (typeof LOOPBACK_HOSTS)[number];

/** Options of {@link startInspectorServer}. */
export interface InspectorServerOptions {
  host: LoopbackHost;
  /** 0 picks a free port. */
  port: number;
  /** The page's HTML; `nonce` must be on its inline `<script>` and `<style>` tags. */
  page(nonce: string): string;
  /** Called with every accepted WebSocket connection. */
  onConnection(socket: WebSocket): void;
  /** Largest message accepted from a client, in bytes. */
  maxPayload: number;
  /** The secret every action must carry (`authorization: Bearer <token>`). */
  token: string;
  /**
   * Called with the parsed JSON body of an action that passed every check (host, origin,
   * content type, size, token); answers with an HTTP status and a JSON body.
   */
  onAction(body: unknown): Promise<{ status: number; body: unknown }>;
}

/** The HTTP and WebSocket transport of the inspector. */
export interface InspectorServer {
  readonly url: string;
  readonly port: number;
  readonly sockets: ReadonlySet<WebSocket>;
  /** Closes every socket (1001), then the listener. Idempotent. */
  close(): Promise<void>;
}

/** The path of the WebSocket endpoint. */
export const WS_PATH = '/ws';
/** The path actions are posted to (decisions, forks): JSON, with the token, from this page only. */
export const ACTION_PATH = '/action';
/** Largest action body accepted, in bytes (edited arguments included). */
export const MAX_ACTION_BYTES = 64 * 1024;

const digest = (text: string) => createHash('sha256').update(text).digest();

/** Whether `header` is `Bearer <token>`, compared in constant time. */
function carriesToken(header: string | undefined, token: string): boolean {
  const m = /^Bearer (\S+)$/.exec(header ?? '');
  return m !== null && timingSafeEqual(digest(m[1]!), digest(token));
}

const LISTEN_FAILED = ErrorCode.LISTEN_FAILED;

/**
 * Serves the page on `/` and upgrades `/ws`. Every request must name this server in its
 * `Host` header (a DNS-rebinding page cannot), and a WebSocket that comes from a browser
 * must come from this server's own page (`Origin`), so another site open in the same browser
 * cannot read the runs.
 */
export async function startInspectorServer(options: InspectorServerOptions): Promise<InspectorServer> {
  let port = 0;
  const authorities = () => new Set(LOOPBACK_HOSTS.map((h) => (h.includes(':') ? `[${h}]:${port}` : `${h}:${port}`)));
  const trustedHost = (req: IncomingMessage) => authorities().has((req.headers.host ?? '').toLowerCase());
  const trustedOrigin = (req: IncomingMessage) => {
    const origin = req.headers.origin;
    // Browsers always send Origin on a WebSocket handshake and on a POST; tools (and tests) need not.
    if (origin === undefined) return req.headers['sec-fetch-site'] === undefined || req.headers['sec-fetch-site'] === 'same-origin';
    try {
      const url = new URL(origin);
      return url.protocol === 'http:' && authorities().has(url.host.toLowerCase());
    } catch {
      return false;
    }
  };

  const wss = new WebSocketServer({ noServer: true, maxPayload: options.maxPayload });
  const json = (res: ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' }).end(text);
  };
  const refused = (res: ServerResponse, status: number, code: string, message: string) => json(res, status, { ok: false, error: { code, message } });

  /**
   * An action is a same-origin `fetch` with a JSON body and the token in a header. A form or
   * image on another site can send neither the header nor that content type without a CORS
   * preflight, which this server never grants; its Origin is refused too.
   */
  const action = (req: IncomingMessage, res: ServerResponse) => {
    if (req.method !== 'POST') return void res.writeHead(405, { allow: 'POST' }).end();
    if (!trustedOrigin(req)) return refused(res, 403, 'FORBIDDEN_ORIGIN', 'actions are accepted from the inspector\'s own page only');
    if (!(req.headers['content-type'] ?? '').toLowerCase().startsWith('application/json')) return refused(res, 415, 'BAD_CONTENT_TYPE', 'an action is a JSON body (content-type: application/json)');
    if (!carriesToken(req.headers.authorization, options.token)) {
      return refused(res, 401, 'TOKEN_REQUIRED', 'this action needs the token `troupe inspect` printed (authorization: Bearer <token>)');
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > MAX_ACTION_BYTES) return refused(res, 413, 'TOO_LARGE', `an action body is at most ${MAX_ACTION_BYTES} bytes`);
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_ACTION_BYTES) {
        refused(res, 413, 'TOO_LARGE', `an action body is at most ${MAX_ACTION_BYTES} bytes`);
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on('end', () => {
      if (res.headersSent) return;
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return refused(res, 400, 'BAD_REQUEST', 'the action body is not JSON');
      }
      options.onAction(body).then(
        (answer) => json(res, answer.status, answer.body),
        (error: unknown) => refused(res, 500, 'ACTION_FAILED', String((error as Error)?.message ?? error)),
      );
    });
  };

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (!trustedHost(req)) return void res.writeHead(403, { 'content-type': 'text/plain' }).end('forbidden host\n');
    if (path === ACTION_PATH) return action(req, res);
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { allow: 'GET, HEAD' }).end();
    if (path === '/favicon.ico') return void res.writeHead(204).end();
    if (path !== '/') return void res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    const nonce = randomBytes(16).toString('base64');
    const body = options.page(nonce);
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'x-frame-options': 'DENY',
      // Everything is inline and nonce'd; the only connection is back to this server.
      'content-security-policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self' ws://${req.headers.host}; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  });

  const refuse = (socket: Duplex, status: string) => {
    socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
  };
  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => socket.destroy());
    if ((req.url ?? '').split('?')[0] !== WS_PATH) return refuse(socket, '404 Not Found');
    if (!trustedHost(req) || !trustedOrigin(req)) return refuse(socket, '403 Forbidden');
    wss.handleUpgrade(req, socket, head, (ws) => options.onConnection(ws));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', (cause: NodeJS.ErrnoException) =>
      reject(
        new TroupeError(LISTEN_FAILED, `inspector cannot listen on ${options.host}:${options.port}: ${cause.code === 'EADDRINUSE' ? 'the port is in use (try --port 0)' : cause.message}`, {
          cause,
          details: { host: options.host, port: options.port },
        }),
      ),
    );
    server.listen(options.port, options.host, () => resolve());
  });
  port = (server.address() as AddressInfo).port;
  const shownHost = options.host.includes(':') ? `[${options.host}]` : options.host;

  let closing: Promise<void> | undefined;
  return {
    url: `http://${shownHost}:${port}/`,
    port,
    sockets: wss.clients,
    close() {
      closing ??= (async () => {
        const closed = [...wss.clients].map(
          (ws) =>
            new Promise<void>((resolve) => {
              ws.once('close', () => resolve());
              ws.close(1001, 'inspector closing');
              // A client that never answers the closing handshake is cut off.
              setTimeout(() => ws.terminate(), 500).unref();
            }),
        );
        await Promise.all(closed);
        await new Promise<void>((resolve) => wss.close(() => resolve()));
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
      })();
      return closing;
    },
  };
}
