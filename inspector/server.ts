import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { ErrorCode, TroupeError } from '../core/errors.js';

/** Hosts the inspector may listen on. It has no authentication, so loopback only. */
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
    // Browsers always send Origin on a WebSocket handshake; tools (and tests) need not.
    if (origin === undefined) return true;
    try {
      const url = new URL(origin);
      return url.protocol === 'http:' && authorities().has(url.host.toLowerCase());
    } catch {
      return false;
    }
  };

  const wss = new WebSocketServer({ noServer: true, maxPayload: options.maxPayload });
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (!trustedHost(req)) return void res.writeHead(403, { 'content-type': 'text/plain' }).end('forbidden host\n');
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
      'content-security-policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src ws://${req.headers.host}; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
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
