import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';

/** One client connection through a {@link tcpProxy}. */
export interface ProxiedConnection {
  /** Every byte the client sent, in order. */
  readonly fromClient: Buffer[];
  /** Writes bytes to the server as if the client had sent them. */
  inject(bytes: Buffer): void;
  readonly client: Socket;
}

/**
 * A man in the middle on 127.0.0.1: forwards bytes both ways, records what clients send,
 * and lets a test rewrite client chunks (`tamper`) or inject its own bytes.
 */
export async function tcpProxy(target: () => { host: string; port: number }) {
  const connections: ProxiedConnection[] = [];
  const waiters: Array<(c: ProxiedConnection) => void> = [];
  let tamper: ((chunk: Buffer, conn: ProxiedConnection) => Buffer) | undefined;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(target().port, target().host);
    sockets.add(client).add(upstream);
    const conn: ProxiedConnection = { fromClient: [], inject: (bytes) => upstream.write(bytes), client };
    connections.push(conn);
    for (const w of waiters.splice(0)) w(conn);
    client.on('data', (chunk: Buffer) => {
      conn.fromClient.push(chunk);
      upstream.write(tamper ? tamper(chunk, conn) : chunk);
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    const end = () => (client.destroy(), upstream.destroy());
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    url: `ws://127.0.0.1:${port}`,
    connections,
    /** Resolves with the next connection (or the one at `index` if it exists). */
    connection(index: number): Promise<ProxiedConnection> {
      const known = connections[index];
      if (known) return Promise.resolve(known);
      return new Promise((resolve) => {
        const check = () => void (connections[index] ? resolve(connections[index]) : waiters.push(check));
        waiters.push(check);
      });
    },
    set tamper(fn: ((chunk: Buffer, conn: ProxiedConnection) => Buffer) | undefined) {
      tamper = fn;
    },
    async [Symbol.asyncDispose]() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
