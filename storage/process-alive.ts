/**
 * Whether a process with id `pid` exists on this machine (signal 0 tests without sending).
 * `EPERM` means it exists but belongs to another user. Used to tell what a dead process left
 * behind (a scratch directory, a test database) from what a live one is still using.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
