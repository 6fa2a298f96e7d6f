import { readFile, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runTroupe, spawnTroupe } from './helpers/cli.js';
import { tempDir } from './helpers/temp.js';

/**
 * The README's "Crash, then resume" commands, run as written (`npx troupe` is the package's
 * bin; here the repository's dev bin) in a directory of their own, with the kill in the
 * middle that the README asks for.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** The `troupe` commands of the sh block under `heading`, without `npx troupe` and comments. */
async function readmeCommands(heading: string): Promise<string[][]> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf(`## ${heading}`));
  const block = section.slice(section.indexOf('```sh') + 5, section.indexOf('```', section.indexOf('```sh') + 5));
  return block
    .split('\n')
    .map((line) => line.replace(/#.*$/, '').trim())
    .filter((line) => line.startsWith('npx troupe '))
    .map((line) => line.slice('npx troupe '.length).split(/\s+/));
}

describe('README commands', () => {
  it('"Crash, then resume": run, kill -9 mid-run, runs shows it running, resume ends with the output of an uninterrupted run', async () => {
    const commands = await readmeCommands('Crash, then resume');
    expect(commands.map((c) => c[0])).toEqual(['run', 'runs', 'resume']);
    const [run, runs, resume] = commands as [string[], string[], string[]];
    const runId = run[run.indexOf('--run-id') + 1]!;

    // The reference: the same crew, uninterrupted, in a directory of its own.
    await using reference = await tempDir();
    await symlink(join(ROOT, 'examples'), join(reference.path, 'examples'));
    const whole = await runTroupe([...run, '--json'], {}, { cwd: reference.path });
    expect(whole.code, whole.stderr).toBe(0);
    const expected = JSON.parse(whole.stdout.split('\n').find((l) => l.includes('"type":"result"'))!) as { output: string };

    await using dir = await tempDir();
    await symlink(join(ROOT, 'examples'), join(dir.path, 'examples'));
    const first = spawnTroupe(run, {}, { cwd: dir.path });
    // Mid-run: after the researcher's first tool call, long before the writer is done.
    await first.waitFor(/researcher\s+tool search ok/);
    first.child.kill('SIGKILL');
    expect((await first.exit).signal).toBe('SIGKILL');

    const listed = await runTroupe(runs, {}, { cwd: dir.path });
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(new RegExp(`${runId}.*running`));

    const resumed = await runTroupe([...resume, '--json'], {}, { cwd: dir.path });
    expect(resumed.code, resumed.stderr).toBe(0);
    const lines = resumed.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { type: string; output?: string });
    expect(lines.some((l) => l.type === 'run.resumed')).toBe(true);
    expect(lines.find((l) => l.type === 'result')?.output).toBe(expected.output);
  }, 60_000);
});
