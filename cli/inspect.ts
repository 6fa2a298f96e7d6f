import { InvalidArgumentError } from 'commander';
import { createNode, type RunHandle, type TroupeNode } from '../core/node.js';
import { createInspector, type InspectorActions } from '../inspector/index.js';
import type { ControlClient } from './control-client.js';
import type { Storage } from '../core/storage.js';
import { nodeIdFor, openStorage } from './open-storage.js';
import { serveControlSocket } from './control-socket.js';
import { resumeHint } from './hints.js';
import type { InspectOptions } from './inspect-command.js';
import { loadCrewModule, type CrewModule } from './load.js';
import { openForReading } from './read-database.js';

const nodeIdOption = (storage: Storage) => {
  const nodeId = nodeIdFor(storage, undefined);
  return nodeId ? { nodeId } : {};
};
const warn = (message: string) => process.stderr.write(`troupe: warning: ${message}\n`);

/**
 * Runs `troupe inspect`: serves the inspector until SIGINT/SIGTERM, and with `--run` runs the
 * crew module here so the page follows it live (and serves the control socket, as `troupe
 * run` does). Without `--run`, a database another node holds is read through that node's
 * control socket: its runs are listed and replayed as they are at each request.
 */
export async function inspect(opts: InspectOptions): Promise<number> {
  const mod: CrewModule | undefined = opts.run ? await loadCrewModule(opts.run) : undefined;
  const input = mod ? (opts.input ?? mod.input) : undefined;
  if (mod && input === undefined) throw new InvalidArgumentError(`${opts.run} exports no \`input\`; pass --input`);
  // Watching only reads: without --run a missing database is an error, not a new one.
  const database = mod ? undefined : await openForReading(opts.db);
  await using storage: Storage = database ? database.storage : await openStorage(opts.db, { create: true, leaseMs: opts.leaseMs });
  // No resume: this command watches; it continues nobody's runs behind their back.
  await using node: TroupeNode | undefined = mod ? await createNode({ storage, models: mod.models, resume: false, ...nodeIdOption(storage) }) : undefined;
  await using _control = node ? await serveControlSocket({ db: opts.db, node, storage }, warn) : undefined;
  // Decisions from the page take the CLI's own paths: this node's, or the holder's over its control socket.
  const actions: InspectorActions | undefined = node ? undefined : database?.control && controlActions(database.control);
  await using inspector = await createInspector({ storage, port: opts.port, ...(node ? { node } : {}), ...(actions ? { actions } : {}), ...(mod ? { machines: [mod.definition] } : {}) });
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(`inspector ${inspector.url}  (Ctrl-C to stop)`);
  out(`token ${inspector.token}  (approve, reject and fork from the page: open ${inspector.url}#token=${inspector.token})`);

  let run: RunHandle | undefined;
  if (node && mod) {
    run = await node.run(mod.definition, { input: input!, source: mod.path, ...(opts.runId ? { runId: opts.runId } : {}) });
    out(`run ${run.id} started (${mod.path})`);
    void run.settled().then((result) => out(`run ${run!.id} ${result.status}${result.error ? `: ${result.error.message}` : ''}`));
  }

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  const interrupted = run?.status === 'running';
  if (interrupted) process.stderr.write(`\n${signal}: checkpointing run ${run!.id}. Continue it with:\n  ${resumeHint(run!.id, opts.db)}\n`);
  // `await using` closes the inspector, then the node (checkpointing its run), then the storage.
  return interrupted ? 130 : 0;
}

/** `approve` and `reject` through the control socket of the node that holds the database, as `troupe approve` sends them. */
function controlActions(control: ControlClient): InspectorActions {
  return {
    async approve(approvalId, options) {
      await control.call({ method: 'approve', approvalId, ...(options.args !== undefined ? { args: options.args } : {}), ...(options.reason ? { reason: options.reason } : {}) });
    },
    async reject(approvalId, reason) {
      await control.call({ method: 'reject', approvalId, reason });
    },
  };
}
