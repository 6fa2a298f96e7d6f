import { describe, expect, it } from 'vitest';
import { runTroupe } from './helpers/cli.js';
import { tempDir } from './helpers/temp.js';

// Each case starts several CLI processes (tsx compiles the sources in each): slow on a busy machine.
describe('CLI exit codes', { timeout: 120_000 }, () => {
  it('exits 2 on usage errors, with the usage of the command on stderr', async () => {
    const cases: Array<{ args: string[]; error: RegExp; usage: string }> = [
      { args: ['frobnicate'], error: /unknown command 'frobnicate'/, usage: 'usage: troupe [options] [command]' },
      { args: ['runs', '--frob'], error: /unknown option '--frob'/, usage: 'usage: troupe runs [options]' },
      { args: ['approve'], error: /missing required argument 'approval-id'/, usage: 'usage: troupe approve [options] <approval-id>' },
      { args: ['reject', 'a1'], error: /required option '--reason <text>' not specified/, usage: 'usage: troupe reject [options] <approval-id>' },
      { args: ['fork', 'r1', '--at', 'zero'], error: /--at takes a checkpoint number/, usage: 'usage: troupe fork [options] <run-id>' },
      { args: ['approve', 'a1', '--result', '{oops'], error: /--result must be JSON/, usage: 'usage: troupe approve [options] <approval-id>' },
      { args: ['resume', 'r1', '--lease-ms', '50'], error: /--lease-ms is a whole number of at least 100/, usage: 'usage: troupe resume [options] <run-id>' },
      { args: ['runs', '--db', 'one', '--storage', 'two'], error: /--db one and --storage two name different databases/, usage: 'usage: troupe runs [options]' },
      { args: ['db', 'repair', 'extra'], error: /too many arguments/, usage: 'usage: troupe db repair [options]' },
      // Found by the command itself, not by the parser: still a usage error.
      { args: ['node', '--db', 'unused'], error: /a node needs --listen and\/or --peer/, usage: 'usage: troupe node [options]' },
    ];
    for (const c of cases) {
      const { code, stdout, stderr } = await runTroupe(c.args);
      expect({ args: c.args, code, stdout }).toEqual({ args: c.args, code: 2, stdout: '' });
      expect(stderr).toMatch(c.error);
      expect(stderr).toContain(`${c.usage}\n`);
    }
  });

  it('exits 0 for --help and --version, 1 for a runtime failure', async () => {
    expect((await runTroupe(['--help'])).code).toBe(0);
    expect((await runTroupe(['runs', '--help'])).code).toBe(0);
    expect((await runTroupe(['--version'])).code).toBe(0);
    await using dir = await tempDir();
    const missing = await runTroupe(['runs', '--db', `${dir.path}/none`]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^troupe: \[STORAGE_NOT_FOUND\] /);
  });
});
