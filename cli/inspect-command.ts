import { InvalidArgumentError, type Command } from 'commander';
import { dbOption, leaseMsOption, storageOption, type LeaseFlags } from './open-storage.js';

/** Port of `troupe inspect` unless `--port` says otherwise. */
export const DEFAULT_INSPECT_PORT = 7433;

/** The options of `troupe inspect`. */
export interface InspectOptions extends LeaseFlags {
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
 * process at a time, so a run must be started by this command to be watched live; the runs
 * of another troupe process are read through its control socket and replayed.
 */
export function registerInspectCommand(program: Command): void {
  program
    .command('inspect')
    .description('serve a local page that shows every agent\'s state machine, live (with --run) or replayed from the journal')
    .addOption(dbOption())
    .addOption(storageOption())
    .option('--port <n>', `port on 127.0.0.1 (0: any free port)`, parsePort, DEFAULT_INSPECT_PORT)
    .option('--run <file>', 'also run this crew module here and follow it live')
    .option('--input <text>', 'the task for --run (default: the module\'s `input` export)')
    .option('--run-id <id>', 'id for the --run run (default: generated)')
    .addOption(leaseMsOption())
    .action(async (opts: InspectOptions) => {
      // The inspector (its server, the node, LevelDB) loads only when the command runs.
      const { inspect } = await import('./inspect.js');
      process.exitCode = await inspect(opts);
    });
}
