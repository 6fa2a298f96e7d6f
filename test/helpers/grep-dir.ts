import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';

/**
 * Files under `dir` (recursively) whose raw bytes contain `needle`, as paths relative to
 * `dir`. Used to prove a planted secret never reached a LevelDB directory: the write-ahead
 * log (`*.log`) holds values verbatim, and msgpack stores strings as plain UTF-8. Table
 * files (`*.ldb`) are Snappy-compressed, which keeps the first occurrence of high-entropy
 * text literal; plant a random needle of 24+ characters without repeats so it stays findable.
 * Run a positive control (the needle written unredacted is found) next to every negative one.
 */
export async function grepDirectory(dir: string, needle: string | Uint8Array): Promise<string[]> {
  const bytes = typeof needle === 'string' ? Buffer.from(needle, 'utf8') : Buffer.from(needle);
  if (bytes.length === 0) throw new TypeError('grepDirectory needs a non-empty needle');
  const hits: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    if ((await readFile(path)).includes(bytes)) hits.push(relative(dir, path));
  }
  return hits.sort();
}
