import { InvalidArgumentError, type Command } from 'commander';
import { createNode, type RunHandle, type TroupeNode } from '../core/node.js';
import { createInspector } from '../inspector/index.js';
import { levelStorage } from '../storage/level.js';
import { loadCrewModule, type CrewModule } from './load.js';

/** Port of `troupe inspect` unless `--port` says otherwise. */
export const DEFAULT_INSPECT_PORT = 7433;

interface InspectOptions {
  db: string;
  port: number;
  run?: string;
  input?: string;
  runId?: string;
}

const parsePort = (value: string) => {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) throw new InvalidArgumentError('--port takes 0..65535 (0: any free port)');
  return port;
};

/**
 * Registers `troupe inspect`: serves the inspector page for the runs in `--db` and, with
 * `--run FILE`, runs that crew module here so the page follows it live. LevelDB admits one
 * process at a time, so a run must be started by this command to be watched live; runs of
 * other processes are replayed once those processes have exited.
 */
export function registerInspectCommand(program: Command): void {
  program
    .command('inspect')
    .description('serve a local page that shows every agent\'s state machine, live (with --run) or replayed from the journal')
    .option('--db <dir>', 'LevelDB directory for runs and checkpoints', './.troupe')
    .option('--port <n>', `port on 127.0.0.1 (0: any free port)`, parsePort, DEFAULT_INSPECT_PORT)
    .option('--run <file>', 'also run this crew module here and follow it live')
    .option('--input <text>', 'the task for --run (default: the module\'s `input` export)')
    .option('--run-id <id>', 'id for the --run run (default: generated)')
    .action(async (opts: InspectOptions) => {
      process.exitCode = await inspect(opts);
    });
}

async function inspect(opts: InspectOptions): Promise<number> {
  const mod: CrewModule | undefined = opts.run ? await loadCrewModule(opts.run) : undefined;
  const input = mod ? (opts.input ?? mod.input) : undefined;
  if (mod && input === undefined) throw new InvalidArgumentError(`${opts.run} exports no \`input\`; pass --input`);
  // Watching only reads: without --run a missing database is an error, not a new one.
  await using storage = await levelStorage({ path: opts.db, create: mod !== undefined });
  // No resume: this command watches; it continues nobody's runs behind their back.
  await using node: TroupeNode | undefined = mod ? await createNode({ storage, models: mod.models, resume: false }) : undefined;
  await using inspector = await createInspector({ storage, port: opts.port, ...(node ? { node } : {}), ...(mod ? { machines: [mod.definition] } : {}) });
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(`inspector ${inspector.url}  (Ctrl-C to stop)`);

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
  if (interrupted) process.stderr.write(`\n${signal}: checkpointing; continue later with \`troupe resume ${run!.id}\`\n`);
  // `await using` closes the inspector, then the node (checkpointing its run), then the storage.
  return interrupted ? 130 : 0;
}
