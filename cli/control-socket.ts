/**
 * The control socket of a running node: a Unix domain socket beside its database through
 * which other `troupe` commands read the database and decide approvals while this process
 * holds LevelDB's lock (LevelDB admits one process at a time).
 * @module
 */
import { chmod, lstat, unlink } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { resolve } from 'node:path';
import { ErrorCode, serializeError, TroupeError } from '../core/errors.js';
import type { TroupeNode } from '../core/node.js';
import { createRunStore } from '../core/run-store.js';
import type { Status, Storage } from '../core/storage.js';
import { controlSocketPath } from './control-path.js';
import {
  CONTROL_PROTOCOL_VERSION,
  ControlRequestSchema,
  MAX_REQUEST_BYTES,
  MAX_RESPONSE_BYTES,
  type ControlError,
  type ControlRequest,
  type ControlResponse,
} from './control-protocol.js';

/** Options of {@link createControlSocket}. */
export interface ControlSocketOptions {
  /** The database directory the node runs on; the socket path is derived from it. */
  db: string;
  node: TroupeNode;
  /** The node's storage, read for `get` and `entries`. */
  storage: Storage;
}

/** A listening control socket. Close it before the node it serves. */
export interface ControlSocket extends AsyncDisposable {
  readonly path: string;
  readonly status: Status;
  /** Stops listening, drops every connection and removes the socket file. Idempotent. */
  close(): Promise<void>;
}

// A page of entries stops growing here, well below the response limit, so one more large
// value cannot push it over.
const PAGE_BYTES = MAX_RESPONSE_BYTES / 4;
const MAX_CONNECTIONS = 32;
// A client that connects and goes quiet must not hold a connection forever.
const IDLE_MS = 60_000;

const errorOf = (error: unknown): ControlError => {
  const s = serializeError(error);
  return { code: s.code ?? 'ERROR', message: s.message, ...(s.details && Object.keys(s.details).length > 0 ? { details: s.details } : {}) };
};

/** Whether something answers on the socket at `path` (a live node), or it is a leftover. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const probe = createConnection(path);
    probe.once('connect', () => {
      probe.destroy();
      resolvePromise(true);
    });
    probe.once('error', () => resolvePromise(false));
  });
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const onError = (error: Error) => reject(error);
    server.once('error', onError);
    // The socket file is created by bind, inside listen(), with the process umask: narrowed
    // for that call so the file is never reachable by others, not even for a moment.
    let previous: number | undefined;
    try {
      previous = process.umask(0o177);
    } catch {
      // Worker threads cannot change the umask; the chmod below still applies.
    }
    try {
      server.listen(path, () => {
        server.off('error', onError);
        resolvePromise();
      });
    } finally {
      if (previous !== undefined) process.umask(previous);
    }
  });
}

/**
 * Listens on the control socket of `db` (see `controlSocketPath`), mode 0600. A socket file
 * left by a process that died without closing (SIGKILL) is detected (nothing answers on it)
 * and replaced. Every request is validated; a malformed or oversized one is answered with a
 * `CONTROL_REQUEST_INVALID` error and never reaches the node. Decisions go through
 * `node.approve`/`node.reject`, which resolve once the decision is durable.
 */
export async function createControlSocket(options: ControlSocketOptions): Promise<ControlSocket> {
  const { node, storage } = options;
  const path = controlSocketPath(options.db);
  const store = createRunStore(storage);
  const connections = new Set<Socket>();
  let status: Status = 'opening';

  const handle = async (request: ControlRequest): Promise<unknown> => {
    switch (request.method) {
      case 'hello':
        return { version: CONTROL_PROTOCOL_VERSION, pid: process.pid, nodeId: node.nodeId, db: resolve(options.db) };
      case 'get': {
        const value = await storage.get(request.key);
        return { value: value === undefined ? null : Buffer.from(value).toString('base64') };
      }
      case 'entries': {
        const entries: Array<[string, string]> = [];
        let bytes = 0;
        let more = false;
        for await (const [key, value] of storage.entries(request.range)) {
          if (bytes > PAGE_BYTES) {
            more = true;
            break;
          }
          const encoded = Buffer.from(value).toString('base64');
          entries.push([key, encoded]);
          bytes += key.length + encoded.length + 8;
        }
        return { entries, more };
      }
      case 'approve':
      case 'reject': {
        const approval = await store.getApproval(request.approvalId);
        if (request.method === 'approve') {
          await node.approve(request.approvalId, {
            ...(request.args !== undefined ? { args: request.args } : {}),
            ...(request.result !== undefined ? { result: request.result } : {}),
            ...(request.reason !== undefined ? { reason: request.reason } : {}),
          });
        } else await node.reject(request.approvalId, request.reason);
        // Reached only once the node wrote the decision: the client may say it is recorded.
        return { approvalId: request.approvalId, runId: approval?.runId ?? '', decision: request.method };
      }
    }
  };

  const respond = (socket: Socket, response: ControlResponse) => {
    if (socket.destroyed) return;
    let line: string;
    try {
      line = JSON.stringify(response);
    } catch (error) {
      line = JSON.stringify({ id: response.id, ok: false, error: { code: ErrorCode.STORAGE_FAILED, message: `the answer could not be encoded: ${(error as Error).message}` } });
    }
    if (Buffer.byteLength(line) > MAX_RESPONSE_BYTES) {
      line = JSON.stringify({ id: response.id, ok: false, error: { code: ErrorCode.CONTROL_REQUEST_INVALID, message: `the answer exceeds ${MAX_RESPONSE_BYTES} bytes` } });
    }
    socket.write(`${line}\n`);
  };

  /** One line of a client: answered in every case, with an error when it is not a valid request. */
  const serveLine = async (socket: Socket, line: string) => {
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch {
      return respond(socket, { id: null, ok: false, error: { code: ErrorCode.CONTROL_REQUEST_INVALID, message: 'bad request: not JSON' } });
    }
    const parsed = ControlRequestSchema.safeParse(raw);
    if (!parsed.success) {
      const id = (raw as { id?: unknown } | null)?.id;
      const echo = typeof id === 'string' && id.length > 0 && id.length <= 64 ? id : null;
      const message = `bad request: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'request'}: ${i.message}`).join('; ')}`;
      return respond(socket, { id: echo, ok: false, error: { code: ErrorCode.CONTROL_REQUEST_INVALID, message: message.slice(0, 1000) } });
    }
    try {
      respond(socket, { id: parsed.data.id, ok: true, result: await handle(parsed.data) });
    } catch (error) {
      respond(socket, { id: parsed.data.id, ok: false, error: errorOf(error) });
    }
  };

  const server = createServer((socket) => {
    if (status !== 'open') return void socket.destroy();
    connections.add(socket);
    socket.setTimeout(IDLE_MS, () => socket.destroy());
    socket.on('close', () => connections.delete(socket));
    socket.on('error', () => {});
    let partial = '';
    // One request at a time per connection: a client cannot queue unbounded work.
    let queue = Promise.resolve();
    socket.setEncoding('utf8').on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop()!;
      if (Buffer.byteLength(partial) > MAX_REQUEST_BYTES) {
        respond(socket, { id: null, ok: false, error: { code: ErrorCode.CONTROL_REQUEST_INVALID, message: `bad request: a line exceeds ${MAX_REQUEST_BYTES} bytes` } });
        socket.end();
        socket.pause();
        partial = '';
        return;
      }
      for (const line of parts) {
        if (line.trim() === '') continue;
        if (Buffer.byteLength(line) > MAX_REQUEST_BYTES) {
          respond(socket, { id: null, ok: false, error: { code: ErrorCode.CONTROL_REQUEST_INVALID, message: `bad request: a line exceeds ${MAX_REQUEST_BYTES} bytes` } });
          continue;
        }
        queue = queue.then(() => serveLine(socket, line)).catch(() => {});
      }
    });
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.on('error', () => {});

  try {
    await listen(server, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw listenFailed(path, error);
    // This process holds the database's lock, so no live node of this database owns the
    // path; a socket nothing answers on is what a killed process left behind.
    const info = await lstat(path).catch(() => undefined);
    if (!info?.isSocket()) throw listenFailed(path, error, 'a file that is not a socket is in the way');
    if (await answers(path)) throw listenFailed(path, error, 'another process answers on it');
    await unlink(path).catch(() => {});
    await listen(server, path).catch((again: unknown) => {
      throw listenFailed(path, again);
    });
  }
  await chmod(path, 0o600).catch(() => {});
  status = 'open';

  let closing: Promise<void> | undefined;
  const control: ControlSocket = {
    path,
    get status() {
      return status;
    },
    close() {
      closing ??= (async () => {
        status = 'closing';
        const closed = new Promise<void>((resolvePromise) => server.close(() => resolvePromise()));
        for (const socket of connections) socket.destroy();
        await closed;
        // server.close() unlinks the socket file itself; this covers a failed or partial close.
        await unlink(path).catch(() => {});
        status = 'closed';
      })();
      return closing;
    },
    [Symbol.asyncDispose]() {
      return control.close();
    },
  };
  return control;
}

function listenFailed(path: string, cause: unknown, why?: string): TroupeError {
  const reason = why ?? (cause as Error | undefined)?.message ?? String(cause);
  return new TroupeError(ErrorCode.LISTEN_FAILED, `cannot listen on the control socket ${path}: ${reason}`, { cause, details: { path } });
}

/**
 * {@link createControlSocket} for a CLI command: a socket that cannot be opened is reported
 * through `warn` and the command goes on without one (its run matters more than reaching it
 * from another shell). Disposing the result closes the socket.
 */
export async function serveControlSocket(options: ControlSocketOptions, warn: (message: string) => void): Promise<AsyncDisposable> {
  // A database many processes share (Postgres) is opened by every command itself.
  if (options.storage.shared) return { [Symbol.asyncDispose]: async () => {} };
  try {
    return await createControlSocket(options);
  } catch (error) {
    warn(`${(error as Error).message}; other troupe commands cannot reach this process while it holds ${options.db}`);
    return { [Symbol.asyncDispose]: async () => {} };
  }
}
