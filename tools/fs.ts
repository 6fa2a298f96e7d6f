import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, open, readdir, realpath, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { z } from 'zod';
import { ErrorCode, TroupeError } from '../core/errors.js';
import { tool, type Tool } from '../core/tool.js';
import { holdDir, isInside, WalkRefused, whereIs, type HeldDir } from './confined-dir.js';

/**
 * File-system tools confined to one directory. Every path is resolved through `realpath`
 * against the real root, so absolute paths elsewhere, `..` escapes and symlinks pointing
 * out are refused with `TOOL_FAILED` / `details.reason: 'path-outside-root'` (the executor
 * turns that into an error message for the model; an auditor sees the reason).
 *
 * The resolved path is then walked again from the root, one directory held open at a time
 * and never through a symlink (tools/confined-dir.ts), and the file is opened, created or
 * renamed only through the directory held: another process swapping a directory for a
 * symlink mid-call makes the call fail, never reach outside (race-free on Linux, where
 * `/proc/self/fd` lets a path start at a descriptor). Files with more than one hard link are
 * refused: a link made inside the root to a file outside would otherwise be read through.
 */

/** Options shared by the fs tools. */
export interface FsToolOptions {
  /** The directory the tool may touch; resolved against the working directory once. */
  root: string;
  /** Tool name override, to give two roots two tools. */
  name?: string;
}

/** Why a path was refused, in `details.why`. */
export type PathRefusal = 'nul-byte' | 'absolute' | 'traversal' | 'symlink' | 'hard-link';

const KiB = 1024;
/** Default read limit of {@link readFileTool}: 256 KiB. */
export const DEFAULT_MAX_READ_BYTES = 256 * KiB;
/** Default write limit of {@link writeFileTool}: 1 MiB. */
export const DEFAULT_MAX_WRITE_BYTES = 1024 * KiB;
/** Default entry limit of {@link listDirTool}. */
export const DEFAULT_MAX_ENTRIES = 1000;

function failure(reason: string, message: string, details: Record<string, unknown> = {}): TroupeError {
  return new TroupeError(ErrorCode.TOOL_FAILED, message, { details: { reason, ...details } });
}

const refuse = (path: string, why: PathRefusal) =>
  failure('path-outside-root', `path "${path.replaceAll('\0', '\\0')}" is refused: ${
    {
      'nul-byte': 'it contains a NUL byte',
      absolute: 'it is an absolute path outside the allowed directory',
      traversal: 'it leads outside the allowed directory',
      symlink: 'a symlink on it leads outside the allowed directory',
      'hard-link': 'the file has other hard links, which may be outside the allowed directory',
    }[why]
  }`, { path, why });

const inside = isInside;

const isOutside = (rel: string) => rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel);

/** Where a requested path really is; `exists` false when it is yet to be created. */
interface Confined {
  real: string;
  /** The root's real path. */
  root: string;
  /** The components of `real` below `root`, none for the root itself. */
  parts: string[];
  /** Relative to the real root, `.` for the root itself: what results show. */
  shown: string;
  exists: boolean;
}

/** Resolves `requested` inside `root` or throws the refusal. Exported for tools built on it. */
export async function confinePath(root: string, requested: string): Promise<Confined> {
  if (requested.includes('\0')) throw refuse(requested, 'nul-byte');
  let rootReal: string;
  try {
    rootReal = await realpath(root);
  } catch (cause) {
    throw new TroupeError(ErrorCode.TOOL_FAILED, 'the allowed directory does not exist', { cause, details: { reason: 'root-missing' } });
  }
  const absolute = isAbsolute(requested) ? resolve(requested) : resolve(root, requested);
  // An absolute path may name the root as configured or as its real path (e.g. /tmp vs /private/tmp).
  let rel = relative(root, absolute);
  if (isOutside(rel)) rel = relative(rootReal, absolute);
  if (isOutside(rel)) throw refuse(requested, isAbsolute(requested) ? 'absolute' : 'traversal');
  const candidate = join(rootReal, rel);

  try {
    return await locate(rootReal, candidate, requested);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR') throw failure('not-found', `"${requested}" goes through something that is not a directory`, { path: requested });
    if (code === 'ELOOP') throw failure('symlink-loop', `"${requested}" has too many levels of symlinks`, { path: requested });
    throw error;
  }
}

async function locate(rootReal: string, candidate: string, requested: string): Promise<Confined> {
  let real: string;
  let exists = true;
  try {
    real = await realpath(candidate);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    // A dangling symlink would be followed by a write to wherever it points.
    if (await lstat(candidate).then((s) => s.isSymbolicLink(), () => false)) throw refuse(requested, 'symlink');
    exists = false;
    let ancestor = dirname(candidate);
    const rest = [basename(candidate)];
    while (true) {
      try {
        real = join(await realpath(ancestor), ...rest);
        break;
      } catch (inner) {
        if ((inner as NodeJS.ErrnoException).code !== 'ENOENT' || ancestor === dirname(ancestor)) throw inner;
        rest.unshift(basename(ancestor));
        ancestor = dirname(ancestor);
      }
    }
  }
  if (!inside(rootReal, real)) throw refuse(requested, 'symlink');
  const rel = relative(rootReal, real);
  return { real, root: rootReal, parts: rel === '' ? [] : rel.split(sep), shown: rel || '.', exists };
}

/**
 * Holds the directory of `target` (its parent, or itself with `self`), turning a tree that
 * changed since it was resolved into the refusal or `not-found` it amounts to.
 */
async function hold(target: Confined, requested: string, options: { self?: boolean; create?: boolean } = {}): Promise<HeldDir> {
  const parts = options.self ? target.parts : target.parts.slice(0, -1);
  try {
    return await holdDir(target.root, parts, options.create);
  } catch (error) {
    throw raced(error, requested);
  }
}

function raced(error: unknown, requested: string): unknown {
  if (error instanceof WalkRefused) {
    return error.why === 'not-a-directory' ? failure('not-found', `"${requested}" goes through something that is not a directory`, { path: requested }) : refuse(requested, 'symlink');
  }
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return failure('not-found', `no such file or directory: "${requested}"`, { path: requested });
  if (code === 'ELOOP') return refuse(requested, 'symlink');
  if (code === 'ENOTDIR') return failure('not-found', `"${requested}" goes through something that is not a directory`, { path: requested });
  return error;
}

/** Refuses an opened file that is not where it was looked for, or has other hard links. */
async function checkOpened(handle: FileHandle, root: string, requested: string): Promise<void> {
  const where = await whereIs(handle);
  if (where !== undefined && !inside(root, where)) throw refuse(requested, 'symlink');
  const info = await handle.stat();
  if (!info.isDirectory() && info.nlink > 1) throw refuse(requested, 'hard-link');
}

function resolveRoot(factory: string, options: FsToolOptions): string {
  if (typeof options?.root !== 'string' || options.root.length === 0) throw new TypeError(`${factory}({ root }) needs the directory the tool is confined to`);
  return resolve(options.root);
}

function positiveInt(factory: string, name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) throw new TypeError(`${factory}({ ${name} }) must be a positive integer`);
  return value;
}

const PathArg = z.string().min(1).max(4096).describe('Path relative to the allowed directory');

/** Options of {@link readFileTool}. */
export interface ReadFileToolOptions extends FsToolOptions {
  /** Larger files are refused (`details.reason: 'too-large'`). Default 256 KiB. */
  maxBytes?: number;
}

/** `read_file({ path })`: a UTF-8 text file under `root`. Scope `fs:read`. */
export function readFileTool(options: ReadFileToolOptions): Tool {
  const root = resolveRoot('readFileTool', options);
  const maxBytes = positiveInt('readFileTool', 'maxBytes', options.maxBytes, DEFAULT_MAX_READ_BYTES);
  return tool({
    name: options.name ?? 'read_file',
    description: `Reads a UTF-8 text file (at most ${maxBytes} bytes) inside the allowed directory.`,
    input: z.object({ path: PathArg }),
    effect: 'read',
    scopes: ['fs:read'],
    async run({ path }, { signal }) {
      signal.throwIfAborted();
      const target = await confinePath(root, path);
      if (!target.exists) throw failure('not-found', `no such file: "${path}"`, { path });
      if (target.parts.length === 0) throw failure('not-a-file', `"${path}" is not a regular file`, { path });
      let handle: FileHandle;
      {
        await using dir = await hold(target, path);
        // O_NOFOLLOW: the checked path must not turn into a symlink before it is opened;
        // O_NONBLOCK: opening a FIFO must not hang the call.
        handle = await open(dir.at(target.parts.at(-1)), constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0)).catch((error: unknown) => {
          throw raced(error, path);
        });
      }
      try {
        await checkOpened(handle, target.root, path);
        const info = await handle.stat();
        if (!info.isFile()) throw failure('not-a-file', `"${path}" is not a regular file`, { path });
        if (info.size > maxBytes) {
          throw failure('too-large', `"${path}" is ${info.size} bytes, over the read limit of ${maxBytes} bytes`, { path, size: info.size, limit: maxBytes });
        }
        // Read at most one byte past the limit: the file may have grown since stat.
        const buffer = Buffer.alloc(maxBytes + 1);
        let length = 0;
        while (length < buffer.length) {
          signal.throwIfAborted();
          const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length);
          if (bytesRead === 0) break;
          length += bytesRead;
        }
        if (length > maxBytes) throw failure('too-large', `"${path}" is over the read limit of ${maxBytes} bytes`, { path, limit: maxBytes });
        try {
          return new TextDecoder('utf-8', { fatal: true }).decode(buffer.subarray(0, length));
        } catch {
          throw failure('not-text', `"${path}" is not UTF-8 text`, { path });
        }
      } finally {
        await handle.close();
      }
    },
  });
}

/** Options of {@link listDirTool}. */
export interface ListDirToolOptions extends FsToolOptions {
  /** Entries beyond this are left out (`truncated: true`). Default 1000. */
  maxEntries?: number;
}

/** `list_dir({ path? })`: names and types in a directory under `root`, sorted. Scope `fs:read`. */
export function listDirTool(options: ListDirToolOptions): Tool {
  const root = resolveRoot('listDirTool', options);
  const maxEntries = positiveInt('listDirTool', 'maxEntries', options.maxEntries, DEFAULT_MAX_ENTRIES);
  return tool({
    name: options.name ?? 'list_dir',
    description: 'Lists a directory inside the allowed directory (default: the directory itself).',
    input: z.object({ path: PathArg.optional() }),
    effect: 'read',
    scopes: ['fs:read'],
    async run({ path = '.' }, { signal }) {
      signal.throwIfAborted();
      const target = await confinePath(root, path);
      if (!target.exists) throw failure('not-found', `no such directory: "${path}"`, { path });
      if (!(await lstat(target.real)).isDirectory()) throw failure('not-a-directory', `"${path}" is not a directory`, { path });
      signal.throwIfAborted();
      await using dir = await hold(target, path, { self: true });
      const dirents = (await readdir(dir.at(), { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      const entries = dirents.slice(0, maxEntries).map((d) => ({
        name: d.name,
        type: d.isFile() ? 'file' : d.isDirectory() ? 'dir' : d.isSymbolicLink() ? 'symlink' : 'other',
      }));
      return { path: target.shown, entries, ...(dirents.length > maxEntries ? { truncated: true, total: dirents.length } : {}) };
    },
  });
}

/** Options of {@link writeFileTool}. */
export interface WriteFileToolOptions extends FsToolOptions {
  /** Larger contents are refused (`details.reason: 'too-large'`). Default 1 MiB. */
  maxBytes?: number;
}

/**
 * `write_file({ path, content })`: writes UTF-8 text under `root`, creating missing parent
 * directories. Idempotent (the same path and content give the same file), so a call
 * interrupted by a crash is simply run again; the write goes to a temporary file renamed
 * into place, so a reader never sees half a file. Scope `fs:write`.
 */
export function writeFileTool(options: WriteFileToolOptions): Tool {
  const root = resolveRoot('writeFileTool', options);
  const maxBytes = positiveInt('writeFileTool', 'maxBytes', options.maxBytes, DEFAULT_MAX_WRITE_BYTES);
  return tool({
    name: options.name ?? 'write_file',
    description: `Writes a UTF-8 text file (at most ${maxBytes} bytes) inside the allowed directory, replacing it if it exists.`,
    input: z.object({ path: PathArg, content: z.string() }),
    effect: 'idempotent',
    scopes: ['fs:write'],
    async run({ path, content }, { signal }) {
      signal.throwIfAborted();
      const bytes = Buffer.from(content, 'utf8');
      if (bytes.length > maxBytes) {
        throw failure('too-large', `content is ${bytes.length} bytes, over the write limit of ${maxBytes} bytes`, { path, size: bytes.length, limit: maxBytes });
      }
      const target = await confinePath(root, path);
      if (target.parts.length === 0) throw failure('not-a-file', 'cannot write to the allowed directory itself', { path });
      const name = target.parts.at(-1)!;
      await using dir = await hold(target, path, { create: true });
      const existing = await lstat(dir.at(name)).catch((error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') return undefined;
        throw error;
      });
      if (existing?.isDirectory()) throw failure('not-a-file', `"${path}" is a directory`, { path });
      // Resolved to a real path, so a symlink here is one put in place since.
      if (existing?.isSymbolicLink()) throw refuse(path, 'symlink');
      // The rename below would replace the link, not write through it; refused all the same,
      // as read_file refuses it, so a hard link never looks like a way out.
      if (existing && existing.nlink > 1) throw refuse(path, 'hard-link');
      const temp = `.${name}.${randomBytes(6).toString('hex')}.tmp`;
      try {
        // wx: O_EXCL never follows a symlink planted under the temporary name.
        const handle = await open(dir.at(temp), 'wx', 0o666);
        try {
          await handle.writeFile(bytes, { signal });
        } finally {
          await handle.close();
        }
        await rename(dir.at(temp), dir.at(name));
      } catch (error) {
        await rm(dir.at(temp), { force: true });
        // ENOENT: the directory held was removed meanwhile.
        throw raced(error, path);
      }
      return { path: target.shown, bytes: bytes.length };
    },
  });
}
