/**
 * Built-in tools. Each declares its permission scopes, so an agent's policy decides whether
 * it may run (see docs/security.md).
 * @module
 */
import type { Tool } from '../core/tool.js';
import { listDirTool, readFileTool, writeFileTool, type FsToolOptions } from './fs.js';

export {
  readFileTool,
  listDirTool,
  writeFileTool,
  confinePath,
  DEFAULT_MAX_READ_BYTES,
  DEFAULT_MAX_WRITE_BYTES,
  DEFAULT_MAX_ENTRIES,
  type FsToolOptions,
  type ReadFileToolOptions,
  type ListDirToolOptions,
  type WriteFileToolOptions,
  type PathRefusal,
} from './fs.js';

/** The three fs tools on one root; `readOnly` leaves out `write_file`. */
export function fsTools(options: FsToolOptions & { readOnly?: boolean }): Tool[] {
  const { readOnly, name: _name, ...shared } = options;
  const read = [readFileTool(shared), listDirTool(shared)];
  return readOnly ? read : [...read, writeFileTool(shared)];
}
