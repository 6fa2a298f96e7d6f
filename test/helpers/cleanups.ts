import { afterEach } from 'vitest';
import { spawnTroupe, type TroupeProcess } from './cli.js';
import { tempDir } from './temp.js';

/**
 * Every fixture of a test, undone after it whatever happened (the last made first):
 * processes still running are killed, servers closed, directories removed.
 */
export function useCleanups() {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
  });
  return {
    /** Runs `cleanup` after the test. */
    defer(cleanup: () => Promise<unknown>): void {
      cleanups.push(cleanup);
    },
    /** A temporary directory, removed after the test. */
    async dir(): Promise<string> {
      const d = await tempDir();
      cleanups.push(async () => d[Symbol.asyncDispose]());
      return d.path;
    },
    /** `troupe ...args` as a child process, killed after the test if it still runs. */
    spawn(args: string[], env: Record<string, string> = {}): TroupeProcess {
      const proc = spawnTroupe(args, env);
      cleanups.push(async () => {
        if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill('SIGKILL');
        await proc.exit;
      });
      return proc;
    },
  };
}
