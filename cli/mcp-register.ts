import { InvalidArgumentError, type Command } from 'commander';
import { dbOption, leaseMsOption, storageOption, type LeaseFlags } from './open-storage.js';

/**
 * Declares `troupe mcp serve`. The command's work (the MCP SDK, a node, LevelDB) is in
 * `./mcp-command.js`, imported when it runs, so `troupe --help` stays light.
 */

function parseHostPort(value: string): { host: string; port: number } {
  const match = /^([^:]+):(\d{1,5})$/.exec(value);
  if (!match) throw new InvalidArgumentError('--http is <host>:<port>, e.g. 127.0.0.1:7410');
  return { host: match[1]!, port: Number(match[2]) };
}

/** Adds `troupe mcp serve <crew-file>` to `program`. */
export function registerMcpCommand(program: Command): void {
  const mcp = program.command('mcp').description('Model Context Protocol: serve a crew as an MCP tool');
  mcp
    .command('serve')
    .description('serve a crew module as one MCP tool (named after the crew, input { input }) over stdio, or Streamable HTTP with --http')
    .argument('<crew-file>', 'crew module, e.g. examples/research-crew.ts')
    .addOption(dbOption('a LevelDB directory, or a postgres:// URL, for the runs'))
    .addOption(storageOption())
    .option('--http <host:port>', 'listen for Streamable HTTP at http://HOST:PORT/mcp instead of stdio', parseHostPort)
    .addOption(leaseMsOption())
    .action(async (file: string, opts: { db: string; http?: { host: string; port: number } } & LeaseFlags) => {
      const [{ serve }, { loadCrewModule }] = await Promise.all([import('./mcp-command.js'), import('./load.js')]);
      process.exitCode = await serve(await loadCrewModule(file), opts);
    });
  // MCP toolsets a crew module opened (stdio children) would keep the process from exiting.
  program.hook('postAction', async () => (await import('../tools/mcp.js')).closeMcpToolsets());
}
