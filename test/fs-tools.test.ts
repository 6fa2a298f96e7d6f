import { execFileSync, spawn } from 'node:child_process';
import { link, mkdir, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isTroupeError, type TroupeError } from '../core/errors.js';
import type { Tool, ToolContext } from '../core/tool.js';
import { executeTool } from '../core/tool-executor.js';
import { DEFAULT_MAX_READ_BYTES, fsTools, listDirTool, readFileTool, writeFileTool } from '../tools/index.js';
import { tempDir } from './helpers/temp.js';

const context = (signal = new AbortController().signal): ToolContext => ({ signal, callId: 'c1', idempotencyKey: 'r:c1', runId: 'r', agentId: 'a', secrets: {} });
const call = (t: Tool, args: unknown, signal?: AbortSignal) => Promise.resolve(t.run(t.input.parse(args), context(signal)));

/**
 * A sandbox: `root` with ordinary files and symlinks (some escaping), next to `outside`
 * holding a file no tool may touch.
 */
async function sandbox() {
  const dir = await tempDir('troupe-fs-');
  const root = join(dir.path, 'root');
  const outside = join(dir.path, 'outside');
  await mkdir(join(root, 'sub'), { recursive: true });
  await mkdir(outside);
  await writeFile(join(root, 'a.txt'), 'alpha');
  await writeFile(join(root, 'sub', 'b.txt'), 'beta');
  await writeFile(join(outside, 'secret.txt'), 'top secret');
  await symlink(join(root, 'sub', 'b.txt'), join(root, 'link-in'));
  await symlink(join(outside, 'secret.txt'), join(root, 'link-out'));
  await symlink(outside, join(root, 'dir-out'));
  await symlink(join(outside, 'not-yet.txt'), join(root, 'dangling-out'));
  await symlink(join(root, 'loop'), join(root, 'loop'));
  return { dir, root, outside, [Symbol.asyncDispose]: () => dir[Symbol.asyncDispose]() };
}

async function refusal(promise: Promise<unknown>): Promise<TroupeError> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  if (!isTroupeError(error, 'TOOL_FAILED')) throw new Error(`expected a TOOL_FAILED refusal, got ${String(error)}`);
  return error;
}

const escapes: [string, (s: { root: string; outside: string }) => string, string][] = [
  ['a .. traversal', () => '../outside/secret.txt', 'traversal'],
  ['a deep .. traversal', () => 'sub/../../outside/secret.txt', 'traversal'],
  ['an absolute path outside', (s) => join(s.outside, 'secret.txt'), 'absolute'],
  ['/etc/passwd', () => '/etc/passwd', 'absolute'],
  ['a symlink to a file outside', () => 'link-out', 'symlink'],
  ['a symlinked directory outside', () => 'dir-out/secret.txt', 'symlink'],
  ['a NUL byte', () => 'a.txt\0.png', 'nul-byte'],
];

describe('read_file', () => {
  it('declares a read effect and the fs:read scope', () => {
    const t = readFileTool({ root: '.' });
    expect([t.name, t.effect, t.scopes]).toEqual(['read_file', 'read', ['fs:read']]);
  });

  it('reads files by relative path, through in-root symlinks, and by absolute path inside the root', async () => {
    await using s = await sandbox();
    const t = readFileTool({ root: s.root });
    expect(await call(t, { path: 'a.txt' })).toBe('alpha');
    expect(await call(t, { path: './sub/../sub/b.txt' })).toBe('beta');
    expect(await call(t, { path: 'link-in' })).toBe('beta');
    expect(await call(t, { path: join(s.root, 'a.txt') })).toBe('alpha');
  });

  it('works when the root itself is reached through a symlink', async () => {
    await using s = await sandbox();
    const alias = join(s.dir.path, 'alias');
    await symlink(s.root, alias);
    const t = readFileTool({ root: alias });
    expect(await call(t, { path: join(alias, 'a.txt') })).toBe('alpha');
    expect(await call(t, { path: join(s.root, 'a.txt') })).toBe('alpha');
  });

  it.each(escapes)('refuses %s with reason path-outside-root', async (_label, path, why) => {
    await using s = await sandbox();
    const requested = path(s);
    const error = await refusal(call(readFileTool({ root: s.root }), { path: requested }));
    expect(error.details).toEqual({ reason: 'path-outside-root', path: requested, why });
    expect(error.message).toMatch(/is refused/);
  });

  it('states the size limit when refusing a large file (256 KiB by default)', async () => {
    await using s = await sandbox();
    await writeFile(join(s.root, 'exact.txt'), 'x'.repeat(DEFAULT_MAX_READ_BYTES));
    await writeFile(join(s.root, 'big.txt'), 'x'.repeat(DEFAULT_MAX_READ_BYTES + 1));
    const t = readFileTool({ root: s.root });
    expect(await call(t, { path: 'exact.txt' })).toHaveLength(DEFAULT_MAX_READ_BYTES);
    const error = await refusal(call(t, { path: 'big.txt' }));
    expect(error.message).toBe('"big.txt" is 262145 bytes, over the read limit of 262144 bytes');
    expect(error.details).toMatchObject({ reason: 'too-large', size: 262145, limit: 262144 });
    expect((await refusal(call(readFileTool({ root: s.root, maxBytes: 3 }), { path: 'a.txt' }))).details.limit).toBe(3);
  });

  it('refuses what is missing, not a file, not text, or a symlink loop', async () => {
    await using s = await sandbox();
    await writeFile(join(s.root, 'bin'), Buffer.from([0xff, 0xfe, 0x00]));
    execFileSync('mkfifo', [join(s.root, 'pipe')]);
    const t = readFileTool({ root: s.root });
    expect((await refusal(call(t, { path: 'nope.txt' }))).details.reason).toBe('not-found');
    expect((await refusal(call(t, { path: 'a.txt/x' }))).details.reason).toBe('not-found');
    expect((await refusal(call(t, { path: 'sub' }))).details.reason).toBe('not-a-file');
    expect((await refusal(call(t, { path: 'pipe' }))).details.reason).toBe('not-a-file'); // and does not hang
    expect((await refusal(call(t, { path: 'bin' }))).details.reason).toBe('not-text');
    expect((await refusal(call(t, { path: 'loop' }))).details.reason).toBe('symlink-loop');
  });

  it('honours an aborted signal', async () => {
    await using s = await sandbox();
    const controller = new AbortController();
    controller.abort(new Error('run stopping'));
    await expect(call(readFileTool({ root: s.root }), { path: 'a.txt' }, controller.signal)).rejects.toThrow('run stopping');
  });

  it('reaches the model as an error tool message through the executor', async () => {
    await using s = await sandbox();
    const message = await executeTool({
      call: { id: 't1', name: 'read_file', args: { path: '../outside/secret.txt' } },
      tools: [readFileTool({ root: s.root })],
      callId: 'a/t1/s1/t1',
      runId: 'r',
      agentId: 'a',
      signal: new AbortController().signal,
      previous: undefined,
      recordIntent: async () => {},
      now: () => 0,
    });
    expect(message).toMatchObject({ role: 'tool', isError: true });
    expect(message.content).toBe('error: path "../outside/secret.txt" is refused: it leads outside the allowed directory');
    expect(message.content).not.toContain('top secret');
  });
});

describe('list_dir', () => {
  it('lists names and types, sorted, defaulting to the root', async () => {
    await using s = await sandbox();
    const t = listDirTool({ root: s.root });
    expect([t.name, t.effect, t.scopes]).toEqual(['list_dir', 'read', ['fs:read']]);
    expect(await call(t, {})).toEqual({
      path: '.',
      entries: [
        { name: 'a.txt', type: 'file' }, { name: 'dangling-out', type: 'symlink' }, { name: 'dir-out', type: 'symlink' },
        { name: 'link-in', type: 'symlink' }, { name: 'link-out', type: 'symlink' }, { name: 'loop', type: 'symlink' }, { name: 'sub', type: 'dir' },
      ],
    });
    expect(await call(t, { path: 'sub' })).toEqual({ path: 'sub', entries: [{ name: 'b.txt', type: 'file' }] });
  });

  it('truncates long listings and says so', async () => {
    await using s = await sandbox();
    expect(await call(listDirTool({ root: s.root, maxEntries: 2 }), {})).toMatchObject({ entries: [{ name: 'a.txt' }, { name: 'dangling-out' }], truncated: true, total: 7 });
  });

  it.each([['..', 'traversal'], ['dir-out', 'symlink'], ['/', 'absolute']])('refuses %s', async (path, why) => {
    await using s = await sandbox();
    expect((await refusal(call(listDirTool({ root: s.root }), { path }))).details).toEqual({ reason: 'path-outside-root', path, why });
  });

  it('refuses a file', async () => {
    await using s = await sandbox();
    expect((await refusal(call(listDirTool({ root: s.root }), { path: 'a.txt' }))).details.reason).toBe('not-a-directory');
  });
});

describe('write_file', () => {
  it('declares an idempotent effect and the fs:write scope', () => {
    const t = writeFileTool({ root: '.' });
    expect([t.name, t.effect, t.scopes]).toEqual(['write_file', 'idempotent', ['fs:write']]);
  });

  it('writes, creating parent directories, and gives the same outcome when run again', async () => {
    await using s = await sandbox();
    const t = writeFileTool({ root: s.root });
    const first = await call(t, { path: 'out/deep/report.md', content: '# Report ✓' });
    const again = await call(t, { path: 'out/deep/report.md', content: '# Report ✓' });
    expect(first).toEqual({ path: join('out', 'deep', 'report.md'), bytes: 12 });
    expect(again).toEqual(first);
    expect(await readFile(join(s.root, 'out', 'deep', 'report.md'), 'utf8')).toBe('# Report ✓');
    await call(t, { path: 'a.txt', content: 'replaced' });
    expect(await readFile(join(s.root, 'a.txt'), 'utf8')).toBe('replaced');
    expect((await readdir(s.root, { recursive: true })).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('writes through an in-root symlink to its target and keeps the link', async () => {
    await using s = await sandbox();
    expect(await call(writeFileTool({ root: s.root }), { path: 'link-in', content: 'gamma' })).toEqual({ path: join('sub', 'b.txt'), bytes: 5 });
    expect(await readFile(join(s.root, 'sub', 'b.txt'), 'utf8')).toBe('gamma');
    expect(await readlink(join(s.root, 'link-in'))).toBe(join(s.root, 'sub', 'b.txt'));
  });

  it.each([
    ...escapes,
    ['a new file in a symlinked directory outside', () => 'dir-out/new.txt', 'symlink'],
    ['a dangling symlink pointing outside', () => 'dangling-out', 'symlink'],
    ['a new directory beside the root', () => '../new/file.txt', 'traversal'],
  ] as typeof escapes)('refuses %s and changes nothing outside', async (_label, path, why) => {
    await using s = await sandbox();
    const requested = path(s);
    const error = await refusal(call(writeFileTool({ root: s.root }), { path: requested, content: 'pwned' }));
    expect(error.details).toEqual({ reason: 'path-outside-root', path: requested, why });
    expect((await readdir(s.outside)).sort()).toEqual(['secret.txt']);
    expect(await readFile(join(s.outside, 'secret.txt'), 'utf8')).toBe('top secret');
    expect((await readdir(s.dir.path)).sort()).toEqual(['outside', 'root']);
  });

  it('refuses oversized content, directories and the root itself', async () => {
    await using s = await sandbox();
    const small = writeFileTool({ root: s.root, maxBytes: 4 });
    const error = await refusal(call(small, { path: 'x.txt', content: 'hello' }));
    expect(error.message).toBe('content is 5 bytes, over the write limit of 4 bytes');
    expect((await refusal(call(small, { path: 'sub', content: '' }))).details.reason).toBe('not-a-file');
    expect((await refusal(call(small, { path: '.', content: '' }))).details.reason).toBe('not-a-file');
  });

  it('writes nothing when the signal is already aborted', async () => {
    await using s = await sandbox();
    const controller = new AbortController();
    controller.abort(new Error('run stopping'));
    await expect(call(writeFileTool({ root: s.root }), { path: 'new.txt', content: 'x' }, controller.signal)).rejects.toThrow('run stopping');
    expect(await readdir(s.root)).not.toContain('new.txt');
  });
});

describe('factories', () => {
  it('refuse bad options with a TypeError stating the rule', () => {
    expect(() => readFileTool({ root: '' })).toThrow(/readFileTool\(\{ root \}\) needs the directory/);
    expect(() => readFileTool({ root: '.', maxBytes: 0 })).toThrow(/maxBytes \}\) must be a positive integer/);
    expect(() => listDirTool({ root: '.', maxEntries: 1.5 })).toThrow(TypeError);
    expect(() => writeFileTool({ root: '.', name: 'bad name' })).toThrow(/tool name/);
  });

  it('fsTools gives the three tools, or the two read tools', () => {
    expect(fsTools({ root: '.' }).map((t) => t.name)).toEqual(['read_file', 'list_dir', 'write_file']);
    expect(fsTools({ root: '.', readOnly: true }).map((t) => t.name)).toEqual(['read_file', 'list_dir']);
  });
});

describe('hard links', () => {
  it('refuses to read or replace a file hard-linked to one outside the root', async () => {
    await using s = await sandbox();
    await link(join(s.outside, 'secret.txt'), join(s.root, 'hard.txt'));
    const read = await refusal(call(readFileTool({ root: s.root }), { path: 'hard.txt' }));
    expect(read.details).toEqual({ reason: 'path-outside-root', path: 'hard.txt', why: 'hard-link' });
    expect(read.message).toMatch(/has other hard links/);
    expect(read.message).not.toContain('top secret');
    const write = await refusal(call(writeFileTool({ root: s.root }), { path: 'hard.txt', content: 'pwned' }));
    expect(write.details).toEqual({ reason: 'path-outside-root', path: 'hard.txt', why: 'hard-link' });
    expect(await readFile(join(s.outside, 'secret.txt'), 'utf8')).toBe('top secret');
  });
});

/**
 * A real process that keeps swapping `root/d` for a symlink to `outside` and back, as fast as
 * it can, until told to stop through a file (its busy loop never sees a signal handler).
 * A directory the tool created while `d` was missing is removed so the swapping goes on.
 */
const RACER = `
const fs = require('node:fs');
const [root, outside, stop] = process.argv.slice(1);
const d = root + '/d', real = root + '/d.real';
let swaps = 0;
process.stdout.write('ready\\n');
for (let i = 0; ; i++) {
  if (i % 64 === 0 && fs.existsSync(stop)) break;
  try { fs.renameSync(d, real); } catch {
    try { if (fs.lstatSync(d).isDirectory() && fs.existsSync(real)) fs.rmSync(d, { recursive: true }); } catch {}
  }
  try { fs.symlinkSync(outside, d); swaps++; } catch {}
  try { fs.unlinkSync(d); } catch {}
  try { fs.renameSync(real, d); } catch {}
}
process.stdout.write(String(swaps));
`;

async function racingSandbox() {
  const s = await sandbox();
  await mkdir(join(s.root, 'd'));
  await writeFile(join(s.root, 'd', 'f.txt'), 'inside');
  await writeFile(join(s.outside, 'f.txt'), 'OUTSIDE');
  const stop = join(s.dir.path, 'stop');
  const child = spawn(process.execPath, ['-e', RACER, s.root, s.outside, stop], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', () => out.includes('ready\n') && resolve());
    child.on('exit', () => reject(new Error(`racer exited early: ${out}`)));
  });
  let stopped: Promise<number> | undefined;
  const finish = () =>
    (stopped ??= (async () => {
      await writeFile(stop, '');
      await exited;
      return Number(out.slice('ready\n'.length));
    })());
  return {
    ...s,
    /** Stops the racer and gives how many times it had put the symlink in place. */
    finish,
    async [Symbol.asyncDispose]() {
      await finish();
      await s[Symbol.asyncDispose]();
    },
  };
}

describe('a concurrent process swapping a directory for a symlink', () => {
  it('never lets read_file read outside the root', async () => {
    await using s = await racingSandbox();
    const t = readFileTool({ root: s.root });
    const outcomes = { inside: 0, outside: 0, refused: 0 };
    for (let i = 0; i < 3000; i++) {
      const result = await call(t, { path: 'd/f.txt' }).catch((e: unknown) => e);
      if (result === 'inside') outcomes.inside++;
      else if (result === 'OUTSIDE') outcomes.outside++;
      else if (result instanceof Error) outcomes.refused++; // refused, or the file was away mid-swap
      else throw new Error(`unexpected result ${String(result)}`);
    }
    const swaps = await s.finish();
    expect(swaps).toBeGreaterThan(0);
    expect(outcomes.inside).toBeGreaterThan(0);
    expect(outcomes).toMatchObject({ outside: 0 });
  });

  it('never lets write_file create or change anything outside the root', async () => {
    await using s = await racingSandbox();
    const t = writeFileTool({ root: s.root });
    let written = 0;
    for (let i = 0; i < 2000; i++) {
      const result = await call(t, { path: 'd/f.txt', content: `written ${i}` }).catch((e: unknown) => e);
      if (!(result instanceof Error)) written++;
    }
    const swaps = await s.finish();
    expect(swaps).toBeGreaterThan(0);
    expect(written).toBeGreaterThan(0);
    expect((await readdir(s.outside)).sort()).toEqual(['f.txt', 'secret.txt']);
    expect(await readFile(join(s.outside, 'f.txt'), 'utf8')).toBe('OUTSIDE');
    expect(await readFile(join(s.outside, 'secret.txt'), 'utf8')).toBe('top secret');
  });
});
