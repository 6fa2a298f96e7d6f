import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { TROUPE_BIN } from './built-cli.js';
import { watchLines } from './lines.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** A `troupe` child process with its output collected line by line. */
export interface TroupeProcess {
  child: ChildProcess;
  lines: string[];
  stderr: () => string;
  /** Resolves with the first stdout line matching `pattern` (already seen or future). */
  waitFor(pattern: RegExp): Promise<string>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `troupe ...args` as a real child process (in the repository, or in `options.cwd`), by default the compiled CLI. */
export function spawnTroupe(args: string[], env: Record<string, string> = {}, options: { cwd?: string; bin?: string } = {}): TroupeProcess {
  const child = spawn(process.execPath, [options.bin ?? TROUPE_BIN, ...args], { cwd: options.cwd ?? ROOT, env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const watched = watchLines(child.stdout!, exit, () => `stdout:\n${watched.lines.join('\n')}\nstderr:\n${err}`);
  return { child, lines: watched.lines, stderr: () => err, exit, waitFor: watched.waitFor };
}

/** Runs `troupe ...args` to completion. */
export async function runTroupe(args: string[], env: Record<string, string> = {}, options: { cwd?: string; bin?: string } = {}) {
  const proc = spawnTroupe(args, env, options);
  const { code } = await proc.exit;
  return { code, stdout: proc.lines.join('\n'), stderr: proc.stderr() };
}
