import { InvalidArgumentError } from 'commander';
import type { TransportFactory } from '../core/transport.js';
import { wsTransport } from '../transports/ws.js';
import type { NetworkFlags } from './network.js';

/** The transport the flags ask for, or `undefined` for a node on its own. */
export function transportFromFlags(flags: NetworkFlags, onListening?: (url: string) => void): TransportFactory | undefined {
  if (!flags.listen && !flags.peer?.length) return undefined;
  const secret = process.env[flags.secretEnv];
  if (!secret || secret.length < 16) throw new InvalidArgumentError(`set ${flags.secretEnv} to the cluster's shared secret (16 characters or more)`);
  let listen: { host: string; port: number } | undefined;
  if (flags.listen) {
    const match = /^([^:]+):(\d{1,5})$/.exec(flags.listen);
    if (!match) throw new InvalidArgumentError('--listen is <host>:<port>');
    listen = { host: match[1]!, port: Number(match[2]) };
  }
  const peers = Object.fromEntries((flags.peer ?? []).map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]));
  const factory = wsTransport({
    secret,
    peers,
    ...(listen ? { listen } : {}),
    ...(flags.outboxMax !== undefined ? { maxOutboxEntries: flags.outboxMax } : {}),
    ...(flags.outboxWaitMs !== undefined ? { outboxWaitMs: flags.outboxWaitMs } : {}),
  });
  void factory.created.then((t) => {
    if (t.address) onListening?.(t.address.url);
  });
  return factory;
}
