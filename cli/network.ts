import { Command, InvalidArgumentError, Option } from 'commander';

// Only commander here: `troupe --help` loads this module, and must not load the transport
// (ws, msgpackr); `./transport.js` builds one when a command runs.

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
