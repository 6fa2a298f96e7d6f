/**
 * The client side of the control socket (`./control-socket.ts`): what a `troupe` command
 * uses when the database it needs is held by a running node.
 * @module
 */
import { lstat } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { ErrorCode, TroupeError } from '../core/errors.js';
import type { Status } from '../core/storage.js';
import { controlSocketPath } from './control-path.js';
import { ControlResponseSchema, HelloSchema, MAX_RESPONSE_BYTES, type ControlCall, type ControlResponse } from './control-protocol.js';

/** Options of {@link connectControl}. */
export interface ControlClientOptions {
  /** How long to wait for the connection and for each answer, in ms. Default 10 s (`TROUPE_CONTROL_TIMEOUT_MS`). */
  timeoutMs?: number;
}

/** A connection to the node that holds a database. */
export interface ControlClient extends AsyncDisposable {
  readonly path: string;
  readonly status: Status;
  /** Who answered: the node's process id and id. */
  readonly peer: { pid: number; nodeId: string; db: string };
  /** Sends one request; resolves with its result, rejects with the node's error (its code kept). */
  call(request: ControlCall): Promise<unknown>;
  /** Idempotent. */
  close(): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const KNOWN_CODES = new Set<string>(Object.values(ErrorCode));

/** The wait for the node, from the environment (tests shorten it), else 10 s. */
function defaultTimeout(): number {
  const value = Number(process.env.TROUPE_CONTROL_TIMEOUT_MS);
  return Number.isFinite(value) && value > 0 ? value : DEFAULT_TIMEOUT_MS;
}

const unavailable = (message: string, details: Record<string, unknown>, cause?: unknown) =>
  new TroupeError(ErrorCode.CONTROL_UNAVAILABLE, message, { details, ...(cause === undefined ? {} : { cause }) });

async function open(path: string, db: string, timeoutMs: number): Promise<Socket> {
  // The fallback path is in a shared temporary directory: a socket another user put there
  // could pose as the node and be handed decisions.
  const info = await lstat(path).catch(() => undefined);
  const uid = process.getuid?.();
  if (info && uid !== undefined && info.uid !== uid) {
    throw unavailable(`the control socket ${path} belongs to another user (uid ${info.uid}); not connecting to it`, { path, db });
  }
  return new Promise((resolvePromise, reject) => {
    const socket = createConnection(path);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(unavailable(`the node holding ${db} did not accept a connection on ${path} within ${timeoutMs} ms`, { path, db }));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolvePromise(socket);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why =
        error.code === 'ENOENT'
          ? `there is no control socket at ${path}`
          : error.code === 'ECONNREFUSED'
            ? `nothing listens on ${path}`
            : `connecting to ${path} failed (${error.code ?? error.message})`;
      reject(unavailable(`the database at ${db} is in use by another process, and ${why}: that process is not a troupe node that serves it (stop it, or wait for it to finish)`, { path, db }, error));
    });
  });
}

/**
 * Connects to the node holding the database at `db` (see `controlSocketPath`) and greets it.
 * Fails with `CONTROL_UNAVAILABLE` when there is no socket, nothing listens on it, it belongs
 * to another user, or the node does not answer within the timeout: never waits without bound.
 * A connection the node dropped (it closes idle ones) is opened again by the next call.
 */
export async function connectControl(db: string, options: ControlClientOptions = {}): Promise<ControlClient> {
  const path = controlSocketPath(db);
  const timeoutMs = options.timeoutMs ?? defaultTimeout();
  const pending = new Map<string, { resolve(value: unknown): void; reject(error: unknown): void; timer: NodeJS.Timeout }>();
  let next = 0;
  let status: Status = 'open';
  let socket: Socket | undefined;

  const failAll = (error: TroupeError) => {
    for (const p of pending.values()) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    pending.clear();
    socket?.destroy();
    socket = undefined;
  };

  const settle = (response: ControlResponse) => {
    const waiting = response.id === null ? undefined : pending.get(response.id);
    if (!waiting) {
      // An error for a request it could not read: ours are valid, so this is the node refusing us.
      if (response.id === null && !response.ok) failAll(unavailable(`the node refused a request: ${response.error.message}`, { path, db }));
      return;
    }
    pending.delete(response.id!);
    clearTimeout(waiting.timer);
    if (response.ok) return waiting.resolve(response.result);
    const { code, message, details } = response.error;
    waiting.reject(new TroupeError(KNOWN_CODES.has(code) ? (code as ErrorCode) : ErrorCode.CONTROL_UNAVAILABLE, message, details ? { details } : {}));
  };

  const attach = (connected: Socket) => {
    let partial = '';
    connected.setEncoding('utf8').on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop()!;
      if (partial.length > MAX_RESPONSE_BYTES) return failAll(unavailable(`the node at ${path} sent an answer over ${MAX_RESPONSE_BYTES} bytes`, { path, db }));
      for (const line of parts) {
        let parsed: ReturnType<typeof ControlResponseSchema.safeParse>;
        try {
          parsed = ControlResponseSchema.safeParse(JSON.parse(line));
        } catch {
          return failAll(unavailable(`the node at ${path} answered with something that is not JSON`, { path, db }));
        }
        if (!parsed.success) return failAll(unavailable(`the node at ${path} answered with a malformed response`, { path, db }));
        settle(parsed.data);
      }
    });
    connected.on('error', () => {});
    connected.on('close', () => {
      if (socket !== connected) return;
      socket = undefined;
      failAll(unavailable(`the node holding ${db} closed the control connection`, { path, db }));
    });
    socket = connected;
    return connected;
  };

  let connecting: Promise<Socket> | undefined;
  const connection = (): Promise<Socket> => {
    if (socket && !socket.destroyed) return Promise.resolve(socket);
    connecting ??= open(path, db, timeoutMs)
      .then(attach)
      .finally(() => (connecting = undefined));
    return connecting;
  };

  const call = async (request: ControlCall): Promise<unknown> => {
    if (status !== 'open') throw unavailable(`the control connection to ${path} is ${status}`, { path, db });
    const connected = await connection();
    const id = String(++next);
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(unavailable(`the node holding ${db} did not answer "${request.method}" on ${path} within ${timeoutMs} ms`, { path, db, method: request.method }));
      }, timeoutMs);
      pending.set(id, { resolve: resolvePromise, reject, timer });
      connected.write(`${JSON.stringify({ ...request, id })}\n`);
    });
  };

  let hello: ControlClient['peer'];
  try {
    const parsed = HelloSchema.safeParse(await call({ method: 'hello' }));
    if (!parsed.success) throw unavailable(`the process listening on ${path} does not speak troupe's control protocol`, { path, db });
    hello = { pid: parsed.data.pid, nodeId: parsed.data.nodeId, db: parsed.data.db };
  } catch (error) {
    socket?.destroy();
    throw error;
  }

  let closing: Promise<void> | undefined;
  const client: ControlClient = {
    path,
    peer: hello,
    get status() {
      return status;
    },
    call,
    close() {
      closing ??= (async () => {
        status = 'closing';
        const current = socket;
        socket = undefined;
        if (current && !current.destroyed) {
          const closed = new Promise<void>((resolvePromise) => current.once('close', () => resolvePromise()));
          current.destroy();
          await closed;
        }
        status = 'closed';
      })();
      return closing;
    },
    [Symbol.asyncDispose]() {
      return client.close();
    },
  };
  return client;
}
