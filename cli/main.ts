/**
 * The `troupe` command line: declares the commands and their options. Each command's work is
 * in `./commands.js`, imported when the command runs: `troupe --help`, `--version` and usage
 * errors load commander and nothing else (no XState, LevelDB, ws or inspector).
 * @module
 */
import { createRequire } from 'node:module';
import { Command, InvalidArgumentError } from 'commander';
import { isTroupeError } from '../core/errors.js';
import type * as Commands from './commands.js';
import { registerInspectCommand } from './inspect-command.js';
import { registerMcpCommand } from './mcp-register.js';
import { withNetworkOptions } from './network.js';

const DEFAULT_DB = './.troupe';

// The package's own manifest, through its `exports` (`troupe/package.json`): the same path from
// the sources and from dist/, where a relative URL would differ by a directory.
const { version } = createRequire(import.meta.url)('troupe/package.json') as { version: string };

// `troupe audit … | head` closes the pipe early: that is the reader's choice, not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

const commands = () => import('./commands.js');
type OptionsOf<F extends (...args: never[]) => unknown> = Parameters<F>[1];

const program = new Command()
  .name('troupe')
  .description('Durable multi-agent crews on XState: run, resume and inspect them.')
  .version(version, '-V, --version', 'print the version')
  .option('--plain', 'one line per event even on a terminal (no live view)')
  .showHelpAfterError();

const parseJson = (label: string) => (value: string) => {
  try {
    return JSON.parse(value) as unknown;
  } catch {
    throw new InvalidArgumentError(`${label} must be JSON`);
  }
};

withNetworkOptions(program
  .command('run'))
  .description('run a crew module (its default export) to completion, printing progress')
  .argument('<file>', 'crew module, e.g. examples/research-crew.ts')
  .option('--db <dir>', 'LevelDB directory for runs and checkpoints', DEFAULT_DB)
  .option('--run-id <id>', 'id for the new run (default: generated)')
  .option('--input <text>', 'the task (default: the module\'s `input` export)')
  .option('--json', 'print events and the result as JSON lines')
  .action(async (file: string, opts: OptionsOf<typeof Commands.runCommand>) => (await commands()).runCommand(file, opts, program.opts()));

withNetworkOptions(program
  .command('resume'))
  .description('resume an unfinished run from its last checkpoint')
  .argument('<run-id>')
  .option('--db <dir>', 'LevelDB directory', DEFAULT_DB)
  .option('--json', 'print events and the result as JSON lines')
  .option('--crew <file>', 'the crew module to resume it with, found by the run\'s crew id (repeatable; needed for parts hosted for a peer)', (v: string, prev: string[] = []) => [...prev, v])
  .action(async (runId: string, opts: OptionsOf<typeof Commands.resumeCommand>) => (await commands()).resumeCommand(runId, opts, program.opts()));

withNetworkOptions(program
  .command('node'))
  .description('run a long-lived node: host actors that peers place here, resume them after a restart')
  .option('--db <dir>', 'LevelDB directory', DEFAULT_DB)
  .option('--crew <file>', 'a crew module this node can host actors of (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
  .action(async (opts: Parameters<typeof Commands.nodeCommand>[0]) => (await commands()).nodeCommand(opts));

program
  .command('approvals')
  .description('list tool calls waiting for a human (and decided ones with --all)')
  .option('--db <dir>', 'LevelDB directory', DEFAULT_DB)
  .option('--all', 'include decided approvals')
  .option('--json', 'print JSON')
  .action(async (opts: Parameters<typeof Commands.approvalsCommand>[0]) => (await commands()).approvalsCommand(opts));

program
  .command('approve')
  .description('approve a waiting tool call, then continue its run here')
  .argument('<approval-id>')
  .option('--db <dir>', 'LevelDB directory', DEFAULT_DB)
  .option('--edit-args <json>', 'run the tool with these arguments instead', parseJson('--edit-args'))
  .option('--result <json>', 'the call did happen with this result: record it, do not run it again', parseJson('--result'))
  .option('--reason <text>', 'why (kept in the journal)')
  .option('--json', 'print events and the result as JSON lines')
  .action(async (approvalId: string, opts: OptionsOf<typeof Commands.approveCommand>) => (await commands()).approveCommand(approvalId, opts, program.opts()));

program
  .command('reject')
  .description('reject a waiting tool call (the model is told why), then continue its run here')
  .argument('<approval-id>')
  .requiredOption('--reason <text>', 'why; shown to the model')
  .option('--db <dir>', 'LevelDB directory', DEFAULT_DB)
  .option('--json', 'print events and the result as JSON lines')
  .action(async (approvalId: string, opts: OptionsOf<typeof Commands.rejectCommand>) => (await commands()).rejectCommand(approvalId, opts, program.opts()));

program
  .command('audit')
  .description("print a run's audit trail, or `troupe audit verify` to check the whole log's hash chain")
  .argument('<run-id|verify>', 'a run id, or `verify`')
  .option('--db <dir>', 'LevelDB directory', DEFAULT_DB)
  .option('--json', 'export as JSON lines (one record a line)')
  .option('--anchor <seq:hash>', 'with verify: a head saved elsewhere, to detect removal of the newest records')
  .action(async (target: string, opts: OptionsOf<typeof Commands.auditCommand>) => (await commands()).auditCommand(target, opts));

program
  .command('history')
  .description("list a run's checkpoints with each actor's state")
  .argument('<run-id>')
  .option('--db <dir>', 'LevelDB directory', DEFAULT_DB)
  .option('--json', 'print JSON')
  .action(async (runId: string, opts: OptionsOf<typeof Commands.historyCommand>) => (await commands()).historyCommand(runId, opts));

program
  .command('fork')
  .description('start a new run from a checkpoint of another (see `troupe history`)')
  .argument('<run-id>')
  .requiredOption('--at <checkpoint>', 'checkpoint number', (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('--at takes a checkpoint number');
    return n;
  })
  .option('--run-id <id>', 'id of the new run')
  .option('--db <dir>', 'LevelDB directory', DEFAULT_DB)
  .option('--json', 'print events and the result as JSON lines')
  .action(async (runId: string, opts: OptionsOf<typeof Commands.forkCommand>) => (await commands()).forkCommand(runId, opts, program.opts()));

program
  .command('runs')
  .description('list runs, newest first')
  .option('--db <dir>', 'LevelDB directory', DEFAULT_DB)
  .option('--json', 'print JSON')
  .action(async (opts: Parameters<typeof Commands.runsCommand>[0]) => (await commands()).runsCommand(opts));

program
  .command('db')
  .description('maintain the database')
  .command('repair')
  .description("back the database directory up, then rebuild it with LevelDB's repair and report the runs it can read")
  .option('--db <dir>', 'LevelDB directory', DEFAULT_DB)
  .action(async (opts: Parameters<typeof Commands.dbRepairCommand>[0]) => (await commands()).dbRepairCommand(opts));

registerInspectCommand(program);
registerMcpCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  const code = isTroupeError(error) ? ` [${error.code}]` : '';
  process.stderr.write(`troupe:${code} ${(error as Error).message}\n`);
  process.exitCode = 1;
}
