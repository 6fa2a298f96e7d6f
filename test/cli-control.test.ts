import { once } from 'node:events';
import { existsSync, statSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { connectControl } from '../cli/control-client.js';
import { controlSocketPath, MAX_SOCKET_PATH_BYTES } from '../cli/control-path.js';
import { createControlSocket } from '../cli/control-socket.js';
import { createRemoteStorage } from '../cli/remote-storage.js';
import { createNode } from '../core/node.js';
import { prefixRange, type KeyRange } from '../core/storage.js';
import { levelStorage } from '../storage/level.js';
import { memoryStorage } from '../storage/memory.js';
import { NOT_PUBLISHED, PUBLISHED } from './fixtures/approval-crew.js';
import { runTroupe } from './helpers/cli.js';
import { watchLines } from './helpers/lines.js';
import { useCleanups } from './helpers/cleanups.js';
import { inspectorClient } from './helpers/inspector-client.js';

const CREW = 'test/fixtures/approval-crew.ts';

const { defer, dir, spawn } = useCleanups();

/** `troupe run --wait` of the approval crew, once it waits: the process and the approval id. */
async function parked(db: string, runId: string, extra: string[] = []) {
  const proc = spawn(['run', CREW, '--db', db, '--run-id', runId, '--wait', ...extra]);
  const line = await proc.waitFor(extra.includes('--json') ? /"type":"waiting"/ : /^waiting for approval /);
  const approvalId = extra.includes('--json') ? (JSON.parse(line) as { approvalId: string }).approvalId : /^waiting for approval (\S+):/.exec(line)![1]!;
  return { proc, approvalId };
}

/** A raw connection to a control socket, its answers collected line by line. */
async function rawClient(path: string) {
  const socket = createConnection(path);
  defer(async () => socket.destroy());
  await once(socket, 'connect');
  const ended = new Promise((resolve) => socket.once('close', resolve));
  const lines = watchLines(socket, ended, () => 'control socket closed');
  return { socket, lines, ended };
}

describe('control socket path', () => {
  it('sits beside the database, or under the temporary directory when that path is too long for a Unix socket', () => {
    expect(controlSocketPath('/srv/troupe/db')).toBe('/srv/troupe/db.control.sock');
    const deep = `/tmp/${'d'.repeat(120)}/db`;
    const short = controlSocketPath(deep);
    expect(short.startsWith(tmpdir())).toBe(true);
    expect(Buffer.byteLength(short)).toBeLessThanOrEqual(MAX_SOCKET_PATH_BYTES);
    // Derived from the path alone: every process finds the same socket.
    expect(controlSocketPath(`${deep}/`)).toBe(short);
    expect(controlSocketPath(`/tmp/${'e'.repeat(120)}/db`)).not.toBe(short);
  });
});

describe('control client and remote storage (in process)', () => {
  it('reads pages of entries in either direction, and reconnects after the node dropped the connection', async () => {
    const db = join(await dir(), 'db');
    const storage = memoryStorage();
    defer(() => storage.close());
    const node = await createNode({ storage, resume: false });
    defer(() => node.close());
    let control = await createControlSocket({ db, node, storage });
    defer(() => control.close());
    const keys = Array.from({ length: 1200 }, (_, i) => `k:${String(i).padStart(4, '0')}`);
    await storage.write(keys.map((key, i) => ({ type: 'put' as const, key, value: new Uint8Array([i % 256, 7]) })));

    const client = await connectControl(db, { timeoutMs: 5000 });
    defer(() => client.close());
    expect(client.peer.pid).toBe(process.pid);
    const remote = createRemoteStorage(client, db);
    const read = async (range: KeyRange) => {
      const out: string[] = [];
      for await (const [key, value] of remote.entries(range)) out.push(`${key}=${value.join(',')}`);
      return out;
    };
    // More than one page each (a page holds at most 512 entries).
    expect(await read(prefixRange('k:'))).toEqual(keys.map((k, i) => `${k}=${i % 256},7`));
    expect((await read(prefixRange('k:', { reverse: true }))).map((e) => e.split('=')[0])).toEqual([...keys].reverse());
    expect((await read(prefixRange('k:', { limit: 700 }))).length).toBe(700);
    expect((await read({ gte: 'k:1190' })).length).toBe(10);
    expect(await remote.get('k:0003')).toEqual(new Uint8Array([3, 7]));
    expect(await remote.get('absent')).toBeUndefined();
    await expect(remote.write([{ type: 'del', key: 'k:0001' }])).rejects.toThrow(/read-only through its control socket/);

    // The node goes away and comes back on the same path: the next call connects again.
    await control.close();
    await expect(remote.get('k:0003')).rejects.toMatchObject({ code: 'CONTROL_UNAVAILABLE' });
    control = await createControlSocket({ db, node, storage });
    expect(await remote.get('k:0004')).toEqual(new Uint8Array([4, 7]));
  });
});

// Each case starts several CLI processes (tsx compiles the sources in each): slow on a busy machine.
describe('CLI through the control socket of a running node', { timeout: 120_000 }, () => {
  it('lists, shows, inspects and approves a parked run from a second process; the first process finishes it', async () => {
    const db = join(await dir(), 'db');
    const { proc, approvalId } = await parked(db, 'c1');
    const socket = controlSocketPath(db);
    expect(statSync(socket).isSocket()).toBe(true);
    expect(statSync(socket).mode & 0o777).toBe(0o600);

    // The database is locked by the first process: these answers come through its socket.
    const runs = await runTroupe(['runs', '--db', db, '--json']);
    expect(runs.stderr).toBe('');
    expect(runs.code).toBe(0);
    expect(JSON.parse(runs.stdout)).toMatchObject({ runs: [{ id: 'c1', crew: 'approval-crew', status: 'waiting' }] });
    const table = await runTroupe(['runs', '--db', db]);
    expect(table.stdout).toMatch(/^c1\s+waiting\s+approval-crew/);

    const approvals = await runTroupe(['approvals', '--db', db, '--json']);
    expect(approvals.code).toBe(0);
    expect(JSON.parse(approvals.stdout)).toMatchObject({ approvals: [{ id: approvalId, runId: 'c1', tool: 'publish', status: 'pending', reason: 'policy' }] });
    expect((await runTroupe(['approvals', '--db', db])).stdout).toMatch(new RegExp(`^${approvalId}\\s+pending\\s+run c1\\s+publisher → publish`));

    const history = await runTroupe(['history', 'c1', '--db', db, '--json']);
    const { history: checkpoints } = JSON.parse(history.stdout) as { history: Array<{ states: Record<string, string> }> };
    expect(checkpoints.at(-1)!.states.publisher).toBe('awaitingApproval');

    // The inspector lists and replays the run as it is stored, read through the socket.
    const inspect = spawn(['inspect', '--db', db, '--port', '0']);
    const url = /^inspector (http:\/\/127\.0\.0\.1:\d+\/)/.exec(await inspect.waitFor(/^inspector http/))![1]!;
    const page = await inspectorClient(url, defer);
    const listed = await page.waitFor((m) => m.type === 'runs');
    expect(listed.runs).toMatchObject([{ id: 'c1', status: 'waiting', live: false }]);
    page.send({ type: 'select', runId: 'c1' });
    const run = (await page.waitFor((m) => m.type === 'run')) as unknown as { timeline: Array<{ kind: string; actor?: string; state?: string }> };
    expect(run.timeline.filter((e) => e.kind === 'state' && e.actor === 'publisher').at(-1)?.state).toBe('awaitingApproval');
    inspect.child.kill('SIGINT');
    expect((await inspect.exit).code).toBe(0);

    const approved = await runTroupe(['approve', approvalId, '--db', db]);
    expect(approved.stderr).toBe('');
    expect(approved.code).toBe(0);
    expect(approved.stdout).toBe(`approval ${approvalId} approved; run c1 continues in process ${proc.child.pid}, which holds ${db}`);
    await proc.waitFor(/^completed in /);
    expect((await proc.exit).code).toBe(0);
    expect(proc.lines.join('\n')).toContain(`\n${PUBLISHED}`);
    // Closed with the node: no socket left behind.
    expect(existsSync(socket)).toBe(false);
    const after = await runTroupe(['approvals', '--db', db, '--all', '--json']);
    expect(JSON.parse(after.stdout)).toMatchObject({ approvals: [{ id: approvalId, status: 'approved' }] });
  });

  it('rejects through the socket (JSON both sides); a decided approval is refused the same way it is on a free database', async () => {
    const db = join(await dir(), 'db');
    const { proc, approvalId } = await parked(db, 'c2', ['--json']);
    const rejected = await runTroupe(['reject', approvalId, '--reason', 'not today', '--db', db, '--json']);
    expect(rejected.code).toBe(0);
    expect(JSON.parse(rejected.stdout)).toEqual({ type: 'decided', approvalId, runId: 'c2', decision: 'reject', pid: proc.child.pid });
    const result = JSON.parse(await proc.waitFor(/"type":"result"/)) as { status: string; output: string };
    expect(result).toMatchObject({ status: 'completed', output: NOT_PUBLISHED });
    expect((await proc.exit).code).toBe(0);
    // Every line the first process printed is one JSON object.
    for (const line of proc.lines) expect(() => JSON.parse(line)).not.toThrow();

    const again = await runTroupe(['approve', approvalId, '--db', db]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/\[APPROVAL_DECIDED\] approval \S+ was already rejected/);
  });

  it('answers a garbage, oversized or unknown request with an error and keeps serving', async () => {
    const db = join(await dir(), 'db');
    const { proc, approvalId } = await parked(db, 'c3');
    const client = await rawClient(controlSocketPath(db));
    client.socket.write('this is not json\n');
    expect(JSON.parse(await client.lines.waitFor(/./))).toMatchObject({ id: null, ok: false, error: { code: 'CONTROL_REQUEST_INVALID' } });
    client.socket.write(`${JSON.stringify({ id: 'x1', method: 'drop-database' })}\n`);
    expect(JSON.parse(await client.lines.waitFor(/"x1"/))).toMatchObject({ id: 'x1', ok: false, error: { code: 'CONTROL_REQUEST_INVALID' } });
    client.socket.write(`${JSON.stringify({ id: 'x2', method: 'approve', approvalId: 'nope' })}\n`);
    expect(JSON.parse(await client.lines.waitFor(/"x2"/))).toMatchObject({ id: 'x2', ok: false, error: { code: 'APPROVAL_NOT_FOUND' } });
    client.socket.write(`${JSON.stringify({ id: 'x3', method: 'hello' })}\n`);
    expect(JSON.parse(await client.lines.waitFor(/"x3"/))).toMatchObject({ id: 'x3', ok: true, result: { pid: proc.child.pid, version: 1 } });
    // A line that never ends is cut off at the limit, and that connection is closed.
    client.socket.write('x'.repeat(100 * 1024));
    expect(JSON.parse(await client.lines.waitFor(/exceeds/))).toMatchObject({ ok: false, error: { code: 'CONTROL_REQUEST_INVALID' } });
    await client.ended;

    // The node took none of it badly.
    expect(JSON.parse((await runTroupe(['approvals', '--db', db, '--json'])).stdout).approvals).toHaveLength(1);
    // A command that needs the database to itself is told who holds it.
    const resume = await runTroupe(['resume', 'c3', '--db', db]);
    expect(resume.code).toBe(1);
    expect(resume.stderr).toMatch(new RegExp(`\\[STORAGE_FAILED\\] database at \\S+ is in use by process ${proc.child.pid}; this command needs it to itself`));
    expect((await runTroupe(['approve', approvalId, '--db', db])).code).toBe(0);
    expect((await proc.exit).code).toBe(0);
  });

  it('serves the control socket of a long-lived troupe node, which continues the run it decides', async () => {
    const db = join(await dir(), 'db');
    const first = await runTroupe(['run', CREW, '--db', db, '--run-id', 'c5']);
    expect(first.code).toBe(3);
    const approvalId = /waiting for approval (\S+):/.exec(first.stdout)![1]!;
    const node = spawn(['node', '--db', db, '--listen', '127.0.0.1:0', '--crew', CREW], { TROUPE_SECRET: 'a-test-secret-of-some-length' });
    await node.waitFor(/^node local ready \(1 unfinished runs resumed\)$/);
    const approved = await runTroupe(['approve', approvalId, '--db', db, '--json']);
    expect(JSON.parse(approved.stdout)).toEqual({ type: 'decided', approvalId, runId: 'c5', decision: 'approve', pid: node.child.pid });
    await node.waitFor(/^\s+crew\s+done$/);
    expect(JSON.parse((await runTroupe(['runs', '--db', db, '--json'])).stdout)).toMatchObject({ runs: [{ id: 'c5', status: 'completed', output: PUBLISHED }] });
    node.child.kill('SIGINT');
    expect((await node.exit).code).toBe(0);
    expect(existsSync(controlSocketPath(db))).toBe(false);
  });

  it('replaces the socket a SIGKILLed process left behind', async () => {
    const db = join(await dir(), 'db');
    const first = await parked(db, 'c4');
    first.proc.child.kill('SIGKILL');
    await first.proc.exit;
    const socket = controlSocketPath(db);
    expect(statSync(socket).isSocket()).toBe(true);

    const resumed = spawn(['resume', 'c4', '--db', db, '--wait']);
    await resumed.waitFor(new RegExp(`^waiting for approval ${first.approvalId}:`));
    expect(resumed.stderr()).toBe('');
    expect(JSON.parse((await runTroupe(['runs', '--db', db, '--json'])).stdout)).toMatchObject({ runs: [{ id: 'c4', status: 'waiting' }] });
    expect((await runTroupe(['approve', first.approvalId, '--db', db])).code).toBe(0);
    expect((await resumed.exit).code).toBe(0);
    expect(resumed.lines.join('\n')).toContain(PUBLISHED);
    expect(existsSync(socket)).toBe(false);
  });

  it('says so clearly when the process holding the database has no control socket, or does not answer', async () => {
    const db = join(await dir(), 'db');
    // This test process holds the database: no troupe node, no socket.
    const storage = await levelStorage({ path: db });
    defer(() => storage.close());
    const missing = await runTroupe(['runs', '--db', db]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/\[CONTROL_UNAVAILABLE\] the database at \S+ is in use by another process, and there is no control socket at /);

    // Something listens on the socket but never answers: the wait is bounded.
    const accepted = new Set<Socket>();
    const silent: Server = createServer((socket) => void accepted.add(socket));
    await new Promise<void>((resolve) => silent.listen(controlSocketPath(db), resolve));
    defer(async () => {
      for (const socket of accepted) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    });
    const mute = await runTroupe(['approvals', '--db', db], { TROUPE_CONTROL_TIMEOUT_MS: '300' });
    expect(mute.code).toBe(1);
    expect(mute.stderr).toMatch(/\[CONTROL_UNAVAILABLE\] the node holding \S+ did not answer "hello" on \S+ within 300 ms/);
  });
});
