import { InvalidArgumentError } from 'commander';
import type { TransportFactory } from '../core/transport.js';
import { loadTlsFiles } from '../transports/tls.js';
import { wsTransport } from '../transports/ws.js';
import type { NetworkFlags } from './network.js';

/** The transport the flags ask for, or `undefined` for a node on its own. */
export function transportFromFlags(flags: NetworkFlags, onListening?: (url: string) => void): TransportFactory | undefined {
  // Usage errors first (exit 2), before any file is read.
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) throw new InvalidArgumentError(flags.tlsCert ? '--tls-cert needs --tls-key' : '--tls-key needs --tls-cert');
  const anyTls = flags.tlsCert !== undefined || flags.tlsCa !== undefined || flags.tlsPeersOnly === true || flags.tlsClientCert === true;
  if (!flags.listen && !flags.peer?.length) {
    if (anyTls) throw new InvalidArgumentError('--tls-cert, --tls-key, --tls-ca, --tls-peers-only and --tls-client-cert need --listen or --peer');
    return undefined;
  }
  if (flags.listen && flags.tlsCert === undefined && flags.tlsCa !== undefined) throw new InvalidArgumentError('--listen with --tls-ca needs --tls-cert and --tls-key to serve wss://');
  if (flags.tlsClientCert && (!flags.listen || flags.tlsCert === undefined || flags.tlsCa === undefined)) throw new InvalidArgumentError('--tls-client-cert needs --listen, --tls-cert and --tls-key (to serve wss://) and --tls-ca (to check client certificates against)');
  const secret = process.env[flags.secretEnv];
  if (!secret || secret.length < 16) throw new InvalidArgumentError(`set ${flags.secretEnv} to the cluster's shared secret (16 characters or more)`);
  let listen: { host: string; port: number } | undefined;
  if (flags.listen) {
    const match = /^([^:]+):(\d{1,5})$/.exec(flags.listen);
    if (!match) throw new InvalidArgumentError('--listen is <host>:<port>');
    listen = { host: match[1]!, port: Number(match[2]) };
  }
  // Read once, now: a missing or invalid file fails the command (exit 1) naming it.
  const files = anyTls ? loadTlsFiles({ ...(flags.tlsCert ? { cert: flags.tlsCert, key: flags.tlsKey! } : {}), ...(flags.tlsCa ? { ca: flags.tlsCa } : {}) }, Boolean(flags.listen)) : undefined;
  const tls = files && { ...files, ...(flags.tlsPeersOnly ? { requirePeers: true } : {}), ...(flags.tlsClientCert ? { requireClientCert: true } : {}) };
  const peers = Object.fromEntries((flags.peer ?? []).map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]));
  const factory = wsTransport({
    secret,
    peers,
    ...(listen ? { listen } : {}),
    ...(tls ? { tls } : {}),
    ...(flags.outboxMax !== undefined ? { maxOutboxEntries: flags.outboxMax } : {}),
    ...(flags.outboxWaitMs !== undefined ? { outboxWaitMs: flags.outboxWaitMs } : {}),
  });
  void factory.created.then((t) => {
    if (t.address) onListening?.(t.address.url);
  });
  return factory;
}
