import { Command, InvalidArgumentError, Option } from 'commander';
import type { TransportFactory } from '../core/transport.js';
import { wsTransport } from '../transports/ws.js';

/** Networking flags shared by `run`, `resume` and `node`. */
export interface NetworkFlags {
  nodeId?: string;
  listen?: string;
  peer?: string[];
  secretEnv: string;
}

const collectPeer = (value: string, previous: string[] = []) => {
  if (!/^[A-Za-z0-9_.-]{1,64}=wss?:\/\/\S+$/.test(value)) throw new InvalidArgumentError('--peer is <node-id>=ws://host:port');
  return [...previous, value];
};

/** Adds `--node-id`, `--listen`, `--peer` and `--secret-env` to a command. */
export function withNetworkOptions(command: Command): Command {
  return command
    .addOption(new Option('--node-id <id>', "this node's name among its peers").default(undefined))
    .option('--listen <host:port>', 'accept peers here, e.g. 127.0.0.1:7400 (port 0 picks one)')
    .option('--peer <id=url>', 'a node to dial, e.g. b=ws://127.0.0.1:7401 (repeatable)', collectPeer)
    .option('--secret-env <name>', 'environment variable holding the shared cluster secret', 'TROUPE_SECRET');
}

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
  const factory = wsTransport({ secret, peers, ...(listen ? { listen } : {}) });
  void factory.created.then((t) => {
    if (t.address) onListening?.(t.address.url);
  });
  return factory;
}
