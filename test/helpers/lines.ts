import type { Readable } from 'node:stream';

/**
 * The lines a child process prints on `stream`, and a wait for the first line matching a
 * pattern (already printed or still to come). `ended` settles when the process is gone: a
 * wait still pending then fails with `describe()` (what the process printed), never hangs.
 */
export function watchLines(stream: Readable, ended: Promise<unknown>, describe: () => string) {
  const lines: string[] = [];
  const waiters: Array<{ pattern: RegExp; resolve(line: string): void }> = [];
  let partial = '';
  stream.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop()!;
    for (const line of parts) {
      lines.push(line);
      for (const waiter of [...waiters]) {
        if (waiter.pattern.test(line)) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(line);
        }
      }
    }
  });
  return {
    lines,
    waitFor(pattern: RegExp): Promise<string> {
      const seen = lines.find((l) => pattern.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        waiters.push({ pattern, resolve });
        void ended.then(() => reject(new Error(`process ended before printing ${pattern}\n${describe()}`)));
      });
    },
  };
}
