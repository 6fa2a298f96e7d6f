import { Command, InvalidArgumentError } from 'commander';
import { createNode, type RunHandle, type TroupeNode } from '../core/node.js';
import { isTroupeError, type SerializedError } from '../core/errors.js';
import type { ModelProviders } from '../core/model.js';
import { createRunStore } from '../core/run-store.js';
import type { RunResult } from '../core/run-host.js';
import { levelStorage } from '../storage/level.js';
import { loadCrewModule } from './load.js';
import { createProgressPrinter } from './progress.js';

const DEFAULT_DB = './.troupe';

const program = new Command()
  .name('troupe')
  .description('Durable multi-agent crews on XState: run, resume and inspect them.')
  .showHelpAfterError();

/** Opens the node, runs `work`, and on SIGINT/SIGTERM checkpoints before exiting. */
async function withNode(db: string, models: ModelProviders, work: (node: TroupeNode) => Promise<number>): Promise<number> {
  await using storage = await levelStorage({ path: db });
  await using node = await createNode({ storage, models, resume: false });
  const interrupt = (signal: NodeJS.Signals) => {
    process.stderr.write(`\n${signal}: checkpointing; continue later with \`troupe resume\`\n`);
    void node.close().then(() => storage.close()).then(() => process.exit(130));
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  // `return await`: the node and storage must stay open until the work is finished.
  return await work(node);
}

/** Prints every event of the node; the first line is always the run id (from run.started/resumed). */
function watch(node: TroupeNode, json: boolean): void {
  node.subscribe(json ? (event) => process.stdout.write(`${JSON.stringify(event)}\n`) : createProgressPrinter(process.stdout));
}

async function follow(run: RunHandle, json: boolean): Promise<number> {
  const started = Date.now();
  const result: RunResult = await run.settled();
  const seconds = ((Date.now() - started) / 1000).toFixed(2);
  if (json) {
    process.stdout.write(`${JSON.stringify({ type: 'result', ...result })}\n`);
  } else if (result.status === 'completed') {
    process.stdout.write(`\ncompleted in ${seconds} s\n\n${result.output}\n`);
  } else {
    process.stdout.write(`\nfailed after ${seconds} s: ${describe(result.error)}\n`);
  }
  return result.status === 'completed' ? 0 : 1;
}

const describe = (error: SerializedError | null) => (error ? `${error.code ? `[${error.code}] ` : ''}${error.message}` : 'unknown error');

program
  .command('run')
  .description('run a crew module (its default export) to completion, printing progress')
  .argument('<file>', 'crew module, e.g. examples/research-crew.ts')
  .option('--db <dir>', 'LevelDB directory for runs and checkpoints', DEFAULT_DB)
  .option('--run-id <id>', 'id for the new run (default: generated)')
  .option('--input <text>', 'the task (default: the module\'s `input` export)')
  .option('--json', 'print events and the result as JSON lines')
  .action(async (file: string, opts: { db: string; runId?: string; input?: string; json?: boolean }) => {
    const mod = await loadCrewModule(file);
    const input = opts.input ?? mod.input;
    if (input === undefined) throw new InvalidArgumentError(`${file} exports no \`input\`; pass --input`);
    process.exitCode = await withNode(opts.db, mod.models, async (node) => {
      watch(node, opts.json ?? false);
      const run = await node.run(mod.definition, { input, source: mod.path, ...(opts.runId ? { runId: opts.runId } : {}) });
      return follow(run, opts.json ?? false);
    });
  });

program
  .command('resume')
  .description('resume an unfinished run from its last checkpoint')
  .argument('<run-id>')
  .option('--db <dir>', 'LevelDB directory', DEFAULT_DB)
  .option('--json', 'print events and the result as JSON lines')
  .action(async (runId: string, opts: { db: string; json?: boolean }) => {
    // The run record names the module to load; read it before the node takes the database.
    const source = await (async () => {
      await using storage = await levelStorage({ path: opts.db });
      const record = await createRunStore(storage).requireRun(runId);
      if (!record.source) throw new InvalidArgumentError(`run ${runId} was not started from a module; resume it through the API`);
      return record.source;
    })();
    const mod = await loadCrewModule(source);
    process.exitCode = await withNode(opts.db, mod.models, async (node) => {
      watch(node, opts.json ?? false);
      const run = await node.resume(runId, mod.definition);
      if (run.status !== 'running') process.stdout.write(opts.json ? '' : `run ${run.id} had already ${run.status}\n`);
      return follow(run, opts.json ?? false);
    });
  });

program
  .command('runs')
  .description('list runs, newest first')
  .option('--db <dir>', 'LevelDB directory', DEFAULT_DB)
  .option('--json', 'print JSON')
  .action(async (opts: { db: string; json?: boolean }) => {
    await using storage = await levelStorage({ path: opts.db });
    const runs = (await createRunStore(storage).listRuns()).sort((a, b) => b.startedAt - a.startedAt);
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(runs.map(({ id, crew, status, startedAt, updatedAt, checkpoint, resumes, output, error }) => ({ id, crew, status, startedAt, updatedAt, checkpoint, resumes, output, error })), null, 2)}\n`);
      return;
    }
    if (runs.length === 0) {
      process.stdout.write(`no runs in ${opts.db}\n`);
      return;
    }
    for (const r of runs) {
      process.stdout.write(`${r.id.padEnd(28)} ${r.status.padEnd(10)} ${r.crew.padEnd(16)} started ${new Date(r.startedAt).toISOString()}  updated ${new Date(r.updatedAt).toISOString()}  checkpoints ${r.checkpoint}\n`);
    }
  });

try {
  await program.parseAsync(process.argv);
} catch (error) {
  const code = isTroupeError(error) ? ` [${error.code}]` : '';
  process.stderr.write(`troupe:${code} ${(error as Error).message}\n`);
  process.exitCode = 1;
}
