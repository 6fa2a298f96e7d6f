import { describe, expect, it } from 'vitest';
import { runTroupe, type TroupeProcess } from './helpers/cli.js';
import { useCleanups } from './helpers/cleanups.js';
import { tempDir } from './helpers/temp.js';

const EXAMPLE = 'examples/distributed-crew.ts';
const SECRET = { TROUPE_SECRET: 'test-cluster-secret-0123456789', TROUPE_DISTRIBUTED: '1', TROUPE_SCRIPTED_LATENCY_MS: '150' };
const outputOf = (stdout: string) => stdout.slice(stdout.indexOf('\n\n', stdout.indexOf('completed in')) + 2);

// Every process is killed after the test, however it ended (a timeout included).
const fx = useCleanups();

async function startNode(id: string, db: string, port = 0): Promise<{ proc: TroupeProcess; url: string }> {
  const proc = fx.spawn(['node', '--node-id', id, '--listen', `127.0.0.1:${port}`, '--db', db, '--crew', EXAMPLE], SECRET);
  const line = await proc.waitFor(/^node \S+ listening on ws:\/\//);
  await proc.waitFor(/^node \S+ ready/);
  return { proc, url: line.slice(line.indexOf('ws://')) };
}

describe('a crew over three processes and WebSockets', () => {
  it('completes with the single-process output after one node is SIGKILLed mid-run and restarted', async () => {
    await using refDb = await tempDir();
    const reference = await runTroupe(['run', EXAMPLE, '--db', refDb.path], { TROUPE_SCRIPTED_LATENCY_MS: '0' });
    expect(reference.code).toBe(0);

    await using dbA = await tempDir();
    await using dbB = await tempDir();
    await using dbC = await tempDir();
    let b = await startNode('b', dbB.path);
    const c = await startNode('c', dbC.path);
    const port = Number(new URL(b.url).port);
    try {
      const origin = fx.spawn(['run', EXAMPLE, '--node-id', 'a', '--db', dbA.path, '--run-id', 'x1', '--peer', `b=${b.url}`, '--peer', `c=${c.url}`], SECRET);
      // Kill b while its researcher is working on the task it received over the wire.
      await b.proc.waitFor(/^ {2}researcher\s+planning$/);
      b.proc.child.kill('SIGKILL');
      await b.proc.exit;
      b = await startNode('b', dbB.path, port);
      await b.proc.waitFor(/resumed from checkpoint/);
      const { code } = await origin.exit;
      const stdout = origin.lines.join('\n');
      expect(origin.stderr()).not.toMatch(/Error/);
      expect(code).toBe(0);
      expect(outputOf(stdout)).toBe(outputOf(reference.stdout));
      // Each node ran its own agent: b's researcher (resumed), c's writer.
      await c.proc.waitFor(/^ {2}writer\s+done$/);
      expect(b.proc.lines.join('\n')).toMatch(/researcher\s+model scripted/);
    } finally {
      b.proc.child.kill('SIGTERM');
      c.proc.child.kill('SIGTERM');
      await Promise.all([b.proc.exit, c.proc.exit]);
    }
  }, 60_000);
});
