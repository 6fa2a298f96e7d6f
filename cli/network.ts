import { Command, InvalidArgumentError, Option } from 'commander';
import { NODE_ID } from '../core/ids.js';

// Only commander here: `troupe --help` loads this module, and must not load the transport
// (ws, msgpackr); `./transport.js` builds one when a command runs.

/** Networking flags shared by `run`, `resume` and `node`. */
export interface NetworkFlags {
  nodeId?: string;
  listen?: string;
  peer?: string[];
  secretEnv: string;
  /** Unacknowledged envelopes kept per peer (the transport's `maxOutboxEntries`). */
  outboxMax?: number;
  /** How long a send to a full outbox waits (`outboxWaitMs`). */
  outboxWaitMs?: number;
  /** PEM files: this node's certificate and key (listen as wss://), and the CA trusted for wss:// peers. */
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  /** Dial only `wss://` peers (the transport's `tls.requirePeers`). */
  tlsPeersOnly?: boolean;
  /** Admit only peers presenting a client certificate signed by `--tls-ca` (`tls.requireClientCert`). */
  tlsClientCert?: boolean;
}

const collectPeer = (value: string, previous: string[] = []) => {
  const cut = value.indexOf('=');
  if (cut === -1 || !NODE_ID.test(value.slice(0, cut)) || !/^wss?:\/\/\S+$/.test(value.slice(cut + 1))) throw new InvalidArgumentError(`--peer is <node-id>=ws://host:port, the node id matching ${NODE_ID}`);
  return [...previous, value];
};

/** A commander parser of a whole number flag of at least `min`. */
export const wholeNumber = (flag: string, min: number) => (value: string) => {
  if (!/^\d{1,9}$/.test(value) || Number(value) < min) throw new InvalidArgumentError(`${flag} is a whole number of at least ${min}`);
  return Number(value);
};

/** Adds `--node-id`, `--listen`, `--peer`, `--secret-env`, the outbox bounds and the TLS files and rules to a command. */
export function withNetworkOptions(command: Command): Command {
  return command
    .addOption(new Option('--node-id <id>', "this node's name among its peers").default(undefined))
    .option('--listen <host:port>', 'accept peers here, e.g. 127.0.0.1:7400 (port 0 picks one)')
    .option('--peer <id=url>', 'a node to dial, e.g. b=ws://127.0.0.1:7401 (repeatable)', collectPeer)
    .option('--secret-env <name>', 'environment variable holding the shared cluster secret', 'TROUPE_SECRET')
    .option('--outbox-max <n>', 'envelopes kept unacknowledged per peer before sends fail with OUTBOX_FULL (default 10000)', wholeNumber('--outbox-max', 1))
    .option('--outbox-wait-ms <ms>', 'how long a send to a full outbox waits for room (default 0)', wholeNumber('--outbox-wait-ms', 0))
    .option('--tls-cert <file>', "this node's certificate (PEM): --listen serves wss://; also its client certificate for wss:// peers")
    .option('--tls-key <file>', 'the private key of --tls-cert (PEM)')
    .option('--tls-ca <file>', 'CA certificate(s) (PEM) trusted for wss:// peers (default the system CAs)')
    .option('--tls-peers-only', 'refuse to dial a ws:// (unencrypted) peer')
    .option('--tls-client-cert', 'admit only peers whose client certificate --tls-ca signed (needs --listen, --tls-cert and --tls-ca)');
}
