/**
 * The `troupe` command line: declares the commands and their options. Each command's work is
 * in `./commands.js`, imported when the command runs: `troupe --help`, `--version` and usage
 * errors load commander and nothing else (no XState, LevelDB, ws or inspector).
 * @module
 */
import { createRequire } from 'node:module';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { isTroupeError } from '../core/errors.js';
import type * as Commands from './commands.js';
import { DEFAULT_DB } from './hints.js';
import { registerInspectCommand } from './inspect-command.js';
import { registerMcpCommand } from './mcp-register.js';
import { wholeNumber, withNetworkOptions } from './network.js';
import { dbOption, leaseMsOption, resolveStorageFlag, storageOption } from './open-storage.js';

// The package's own manifest, through its `exports` (`troupe/package.json`): the same path from
// the sources and from dist/, where a relative URL would differ by a directory.
const { version } = createRequire(import.meta.url)('troupe/package.json') as { version: string };

// `troupe audit … | head` closes the pipe early: that is the reader's choice, not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

const commands = () => import('./commands.js');
const replayCommands = () => import('./replay.js');
type replayCommand = typeof import('./replay.js').replayCommand;
const exportCommands = () => import('./export.js');
type exportCommand = typeof import('./export.js').exportCommand;
type importCommand = typeof import('./export.js').importCommand;
type upgradeCommand = typeof import('./upgrade.js').upgradeCommand;
type OptionsOf<F extends (...args: never[]) => unknown> = Parameters<F>[1];

/** Exit code of a usage error: an unknown command or option, a missing or bad argument. */
const EXIT_USAGE = 2;

const program = new Command()
  .name('troupe')
  .description('Durable multi-agent crews on XState: run, resume and inspect them.')
  .version(version, '-V, --version', 'print the version')
  .option('--plain', 'one line per event even on a terminal (no live view)')
  // Before any command is declared, so every command inherits it: commander throws instead
  // of exiting, and the exit code is decided below (2 for usage errors).
  .exitOverride();

const parseJson = (label: string) => (value: string) => {
  try {
    return JSON.parse(value) as unknown;
  } catch {
    throw new InvalidArgumentError(`${label} must be JSON`);
  }
};

/** A parser of a checkpoint number option (`--at`). */
const checkpointNumber = (flag: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${flag} takes a checkpoint number`);
  return n;
};

withNetworkOptions(program
  .command('run'))
  .description('run a crew module (its default export) to completion, printing progress')
  .argument('<file>', 'crew module, e.g. examples/research-crew.ts')
  .addOption(dbOption('where runs are kept: a LevelDB directory, or a postgres:// URL shared by a cluster'))
  .addOption(storageOption())
  .option('--run-id <id>', 'id for the new run (default: generated)')
  .option('--input <text>', 'the task (default: the module\'s `input` export)')
  .option('--json', 'print events and the result as JSON lines')
  .option('--wait', 'when the run waits for a human, keep it here and take the decision from `troupe approve`/`reject` in another shell (instead of exiting 3)')
  .addOption(leaseMsOption())
  .action(async (file: string, opts: OptionsOf<typeof Commands.runCommand>) => (await commands()).runCommand(file, opts, program.opts()));

withNetworkOptions(program
  .command('resume'))
  .description('resume an unfinished run from its last checkpoint')
  .argument('<run-id>')
  .addOption(dbOption())
  .addOption(storageOption())
  .option('--json', 'print events and the result as JSON lines')
  .option('--crew <file>', 'the crew module to resume it with, found by the run\'s crew id (repeatable; needed for parts hosted for a peer)', (v: string, prev: string[] = []) => [...prev, v])
  .option('--wait', 'when the run waits for a human, keep it here and take the decision from another shell (instead of exiting 3)')
  .addOption(leaseMsOption())
  .action(async (runId: string, opts: OptionsOf<typeof Commands.resumeCommand>) => (await commands()).resumeCommand(runId, opts, program.opts()));

withNetworkOptions(program
  .command('node'))
  .description('run a long-lived node: host actors that peers place here, resume them after a restart; on a postgres:// --db, a worker taking runs from the shared database')
  .addOption(dbOption())
  .addOption(storageOption())
  .option('--crew <file>', 'a crew module this node can host actors of (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
  .option('--concurrency <n>', 'on a shared database: runs executed at once (default 8)', wholeNumber('--concurrency', 1))
  .addOption(leaseMsOption())
  .option('--poll-ms <ms>', 'on a shared database: how often to look for free runs besides being notified (default 1000)', wholeNumber('--poll-ms', 10))
  .action(async (opts: Parameters<typeof Commands.nodeCommand>[0]) => (await commands()).nodeCommand(opts));

program
  .command('approvals')
  .description('list tool calls waiting for a human (and decided ones with --all)')
  .addOption(dbOption())
  .addOption(storageOption())
  .option('--all', 'include decided approvals')
  .option('--json', 'print one JSON object: { "approvals": [...] }')
  .action(async (opts: Parameters<typeof Commands.approvalsCommand>[0]) => (await commands()).approvalsCommand(opts));

program
  .command('approve')
  .description('approve a waiting tool call, then continue its run here')
  .argument('<approval-id>')
  .addOption(dbOption())
  .addOption(storageOption())
  .option('--edit-args <json>', 'run the tool with these arguments instead', parseJson('--edit-args'))
  .option('--result <json>', 'the call did happen with this result: record it, do not run it again', parseJson('--result'))
  .option('--reason <text>', 'why (kept in the journal)')
  .option('--json', 'print events and the result as JSON lines')
  .addOption(leaseMsOption())
  .action(async (approvalId: string, opts: OptionsOf<typeof Commands.approveCommand>) => (await commands()).approveCommand(approvalId, opts, program.opts()));

program
  .command('reject')
  .description('reject a waiting tool call (the model is told why), then continue its run here')
  .argument('<approval-id>')
  .requiredOption('--reason <text>', 'why; shown to the model')
  .addOption(dbOption())
  .addOption(storageOption())
  .option('--json', 'print events and the result as JSON lines')
  .addOption(leaseMsOption())
  .action(async (approvalId: string, opts: OptionsOf<typeof Commands.rejectCommand>) => (await commands()).rejectCommand(approvalId, opts, program.opts()));

program
  .command('audit')
  .description("print a run's audit trail, or `troupe audit verify` to check the whole log's hash chain")
  .argument('<run-id|verify>', 'a run id, or `verify`')
  .addOption(dbOption())
  .addOption(storageOption())
  .option('--json', 'the trail as JSON lines (one record a line); with verify, one JSON object: { "verify": {...} }')
  .option('--anchor <seq:hash>', 'with verify: a head saved elsewhere, to detect removal of the newest records')
  .option('--audit-dir <dir>', 'with verify: the audit key and saved heads (default $TROUPE_AUDIT_DIR, else <db>.audit)')
  .option('--no-key', 'with verify: check an unkeyed log, without an audit directory')
  .action(async (target: string, opts: OptionsOf<typeof Commands.auditCommand>) => (await commands()).auditCommand(target, opts));

program
  .command('history')
  .description("list a run's checkpoints with each actor's state")
  .argument('<run-id>')
  .addOption(dbOption())
  .addOption(storageOption())
  .option('--json', 'print one JSON object: { "runId": ..., "history": [...] }')
  .action(async (runId: string, opts: OptionsOf<typeof Commands.historyCommand>) => (await commands()).historyCommand(runId, opts));

program
  .command('fork')
  .description('start a new run from a checkpoint of another (see `troupe history`)')
  .argument('<run-id>')
  .requiredOption('--at <checkpoint>', 'checkpoint number', checkpointNumber('--at'))
  .option('--run-id <id>', 'id of the new run')
  .addOption(dbOption())
  .addOption(storageOption())
  .option('--json', 'print events and the result as JSON lines')
  .addOption(leaseMsOption())
  .action(async (runId: string, opts: OptionsOf<typeof Commands.forkCommand>) => (await commands()).forkCommand(runId, opts, program.opts()));

program
  .command('replay')
  .description('re-execute a recorded run with new crew code (or a new model) in a scratch space, serving its recorded calls, and report the first divergence')
  .argument('<run-id>')
  .requiredOption('--crew <file>', 'the crew module to replay the run with')
  .option('--db <dir>', 'LevelDB directory (only read)', DEFAULT_DB)
  .option('--at <checkpoint>', 'replay from this checkpoint instead of the start (see `troupe history`)', checkpointNumber('--at'))
  .option('--continue', "go on past divergences: the new code's calls that do not match are not served (models asked, tools not executed)")
  .option('--model <old=new>', 'rehearse: ask the calls of model `old` of model `new` (a provider the crew module exports), side by side with the recording')
  .option('--json', 'print one JSON object: { "replay": { "clean", "ended", "calls", "divergences", "outcome", "rehearsal"? } }')
  .action(async (runId: string, opts: Parameters<replayCommand>[1]) => {
    process.exitCode = await (await replayCommands()).replayCommand(runId, opts);
  });

program
  .command('export')
  .description('write one run (record, checkpoints, conversations, journal, ledger, approvals) to one redacted, portable file')
  .argument('<run-id>')
  .option('--db <dir>', 'LevelDB directory (only read)', DEFAULT_DB)
  .option('--out <file>', 'where to write it (default <run-id>.recording.json)')
  .option('--json', 'print one JSON object: { "export": { "runId", "crew", "file", "keys", "secrets" } }')
  .action(async (runId: string, opts: Parameters<exportCommand>[1]) => {
    process.exitCode = await (await exportCommands()).exportCommand(runId, opts);
  });

program
  .command('import')
  .description('load a recording file (troupe export) into a database; never overwrites a run, a damaged file writes nothing')
  .argument('<file>')
  .option('--db <dir>', 'LevelDB directory (created if missing)', DEFAULT_DB)
  .option('--json', 'print one JSON object: { "import": { "runId", "crew", "keys", "db" } }')
  .action(async (file: string, opts: Parameters<importCommand>[1]) => {
    process.exitCode = await (await exportCommands()).importCommand(file, opts);
  });

program
  .command('upgrade')
  .description('replay every unfinished run of a crew against new code and its migrations; upgrade only those that replay cleanly (--dry-run: list them)')
  .requiredOption('--crew <file>', 'the crew module with the new code')
  .option('--db <dir>', 'LevelDB directory', DEFAULT_DB)
  .option('--dry-run', 'list which runs would continue cleanly and which diverge; change nothing')
  .option('--json', 'print one JSON object: { "upgrade": { "crew", "version", "dryRun", "runs": [{ "runId", "status", "version", "verdict", "reason"?, "upgraded"? }] } }')
  .action(async (opts: Parameters<upgradeCommand>[0]) => {
    process.exitCode = await (await import('./upgrade.js')).upgradeCommand(opts);
  });

program
  .command('runs')
  .description('list runs, newest first')
  .addOption(dbOption())
  .addOption(storageOption())
  .option('--json', 'print one JSON object: { "runs": [...] }')
  .action(async (opts: Parameters<typeof Commands.runsCommand>[0]) => (await commands()).runsCommand(opts));

const db = program.command('db').description('maintain the database');

db.command('compact')
  .description('reclaim the space deleted keys still hold in a LevelDB directory no process has open (a running node compacts as it deletes)')
  .addOption(dbOption())
  .option('--json', 'print one JSON object: { "compact": { "db", "bytesBefore", "bytesAfter" } }')
  .action(async (opts: Parameters<typeof Commands.dbCompactCommand>[0]) => (await commands()).dbCompactCommand(opts));

db.command('repair')
  .description("back the database directory up, then rebuild it with LevelDB's repair and report the runs it can read")
  .addOption(dbOption())
  .addOption(storageOption())
  .action(async (opts: Parameters<typeof Commands.dbRepairCommand>[0]) => (await commands()).dbRepairCommand(opts));

registerInspectCommand(program);
registerMcpCommand(program);

/** The full name of a command (`troupe db repair`), for messages. */
const fullName = (command: Command): string => (command.parent ? `${fullName(command.parent)} ${command.name()}` : command.name());
/** The short usage line of `command` and where to read more: what a usage error ends with. */
const usageHint = (command: Command) => `usage: ${fullName(command)} ${command.usage()}\n(see \`${fullName(command)} --help\`)`;

// Each command's own usage after its errors, not the whole help text.
const everyCommand = (command: Command): Command[] => [command, ...command.commands.flatMap(everyCommand)];
for (const command of everyCommand(program)) command.showHelpAfterError(usageHint(command));

// The command whose action runs, so a usage error found there is explained with its usage.
let acting: Command = program;
program.hook('preAction', (_program, actionCommand) => {
  acting = actionCommand;
  const opts = actionCommand.opts<{ db?: string; storage?: string }>();
  resolveStorageFlag(opts, actionCommand.getOptionValueSource('db') === 'default', (db) => actionCommand.setOptionValue('db', db));
});

/**
 * With `--json`, a command that fails says so on stdout too, as one JSON object: a script
 * reading stdout would otherwise see nothing at all, or the start of a stream with no end.
 */
const jsonFailure = (error: { code: string; message: string; retryable?: boolean; details?: unknown }, exitCode: number) => {
  const json = acting.opts<{ json?: boolean }>().json === true || (acting === program && process.argv.includes('--json'));
  if (!json) return;
  const { code, message, retryable, details } = error;
  process.stdout.write(`${JSON.stringify({ error: { code, message, exitCode, ...(retryable ? { retryable } : {}), ...(details && typeof details === 'object' && Object.keys(details).length > 0 ? { details } : {}) } })}\n`);
};

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof InvalidArgumentError) {
    // Thrown by a command's own checks (`--input` missing, a bad `--listen`): a usage error
    // commander has not printed.
    process.stderr.write(`troupe: ${error.message}\n${usageHint(acting)}\n`);
    process.exitCode = EXIT_USAGE;
    jsonFailure({ code: 'USAGE', message: error.message }, EXIT_USAGE);
  } else if (error instanceof CommanderError) {
    // Already printed by commander (with the usage hint); `--help` and `--version` exit 0.
    process.exitCode = error.exitCode === 0 ? 0 : EXIT_USAGE;
    if (process.exitCode !== 0) jsonFailure({ code: 'USAGE', message: error.message.replace(/^error: /, '') }, EXIT_USAGE);
  } else {
    const code = isTroupeError(error) ? ` [${error.code}]` : '';
    process.stderr.write(`troupe:${code} ${(error as Error).message}\n`);
    process.exitCode = 1;
    jsonFailure(isTroupeError(error) ? error : { code: 'ERROR', message: String((error as Error)?.message ?? error) }, 1);
  }
}
// An interrupted command has closed its node (everything is durable) and said how to go on:
// a model or tool call that ignores its abort signal must not keep the process alive.
if (process.exitCode === 130) process.exit(130);
