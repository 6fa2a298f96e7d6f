import { constants, existsSync } from 'node:fs';
import { mkdir, open, readlink, type FileHandle } from 'node:fs/promises';
import { join, sep } from 'node:path';

/**
 * Directories held open, so a file tool acts on the directory it checked and not on
 * whatever the path names a moment later. A path is re-walked from the root one component
 * at a time, each opened with `O_NOFOLLOW | O_DIRECTORY` relative to the one before
 * (`/proc/self/fd/<fd>/<name>` on Linux is resolved through the held descriptor, like
 * `openat`), so a directory swapped for a symlink mid-call fails the open (`ELOOP`) instead
 * of being followed out of the root. Files are then opened, created and renamed only
 * through the held directory.
 *
 * Without `/proc/self/fd` (macOS, Windows) the same calls go by path, each component
 * checked with `O_NOFOLLOW`: a symlink in place of the final component is still refused,
 * but a concurrent swap of an earlier directory can win the race.
 */

/** Whether held directories are real descriptors (Linux with /proc mounted). */
export const RACE_FREE = process.platform === 'linux' && existsSync('/proc/self/fd');

const O_DIRECTORY = constants.O_DIRECTORY ?? 0;
const O_NOFOLLOW = constants.O_NOFOLLOW ?? 0;

/** The path through which `handle` (or `name` in the directory it holds) is reached. */
export const fdPath = (handle: FileHandle, name?: string) => (name === undefined ? `/proc/self/fd/${handle.fd}` : `/proc/self/fd/${handle.fd}/${name}`);

/** A directory under the root, held while a tool works in it. */
export interface HeldDir extends AsyncDisposable {
  /** The path that reaches `name` in this directory (or the directory itself) without re-resolving the way here. */
  at(name?: string): string;
  close(): Promise<void>;
}

/** Thrown when a component turned out to be a symlink or not a directory while walking: the tree changed under the call. */
export class WalkRefused extends Error {
  constructor(readonly why: 'symlink' | 'not-a-directory' | 'moved-out', readonly component: string) {
    super(`${component}: ${why}`);
  }
}

/** Whether `path` is `root` or inside it. */
export const isInside = (root: string, path: string) => path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);

/**
 * Where the open descriptor `handle` really is (Linux), to check a file or directory
 * opened is still under the root: `undefined` where that cannot be known.
 */
export async function whereIs(handle: FileHandle): Promise<string | undefined> {
  if (!RACE_FREE) return undefined;
  const target = await readlink(fdPath(handle));
  // A deleted directory or file reads as "<path> (deleted)": it is nowhere now.
  return target.endsWith(' (deleted)') ? '' : target;
}

/**
 * Opens the directory `parts` below `rootReal` (itself a real path) one component at a
 * time, never following a symlink; with `create`, missing components are made (and opened
 * the same way, so one replaced by a symlink between mkdir and open is refused). Rejects
 * with `ENOENT` for a missing component without `create`, and {@link WalkRefused} when the
 * tree no longer is what was resolved.
 */
export async function holdDir(rootReal: string, parts: readonly string[], create = false): Promise<HeldDir> {
  if (!RACE_FREE) return heldByPath(rootReal, parts, create);
  let handle = await open(rootReal, constants.O_RDONLY | O_DIRECTORY);
  try {
    for (const part of parts) {
      let next: FileHandle;
      try {
        next = await openDir(fdPath(handle, part), part);
      } catch (error) {
        if (!create || (error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        await mkdir(fdPath(handle, part)).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== 'EEXIST') throw e;
        });
        next = await openDir(fdPath(handle, part), part);
      }
      await handle.close();
      handle = next;
    }
    // A directory opened inside may have been moved out of the root since: check where it is now.
    const where = await whereIs(handle);
    if (where !== undefined && !isInside(rootReal, where)) throw new WalkRefused('moved-out', parts.join(sep) || '.');
  } catch (error) {
    await handle.close();
    throw error;
  }
  const held = handle;
  return {
    at: (name) => fdPath(held, name),
    close: () => held.close(),
    [Symbol.asyncDispose]: () => held.close(),
  };
}

async function openDir(path: string, part: string): Promise<FileHandle> {
  try {
    return await open(path, constants.O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new WalkRefused('symlink', part);
    if (code === 'ENOTDIR') throw new WalkRefused('not-a-directory', part);
    throw error;
  }
}

async function heldByPath(rootReal: string, parts: readonly string[], create: boolean): Promise<HeldDir> {
  let path = rootReal;
  for (const part of parts) {
    path = join(path, part);
    let handle: FileHandle;
    try {
      handle = await openDir(path, part);
    } catch (error) {
      if (!create || (error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      await mkdir(path).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'EEXIST') throw e;
      });
      handle = await openDir(path, part);
    }
    await handle.close();
  }
  const dir = path;
  return { at: (name) => (name === undefined ? dir : join(dir, name)), close: async () => {}, [Symbol.asyncDispose]: async () => {} };
}
