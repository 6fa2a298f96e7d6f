import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createNode, memoryStorage } from '../index.js';
import { postgresStorage } from '../storage/postgres/index.js';
import { createRunStore } from '../core/run-store.js';
import clusterCrew, { models, readStamps } from './fixtures/cluster-crew.js';
import { runTroupe, type TroupeProcess } from './helpers/cli.js';
import { useCleanups } from './helpers/cleanups.js';
import { useTestDatabase } from './helpers/postgres.js';

/**
 * `troupe node` processes on one Postgres database: runs spread over them, a killed node's
 * runs finish on the others, and a frozen owner whose run was taken writes nothing more.
 */

const CREW = fileURLToPath(new URL('./fixtures/cluster-crew.ts', import.meta.url));

const db = useTestDatabase();

const fx = useCleanups();

const sql = db.sql;

/** Records runs of the cluster crew for the nodes to take, as `troupe run` from any machine would. */
const submit = async (ids: string[], input: (id: string) => string) => {
  await using storage = await postgresStorage({ connectionString: db.url });
  await using node = await createNode({ storage, nodeId: 'submitter', resume: false });
  for (const id of ids) await node.submit(clusterCrew, { input: input(id), runId: id, source: CREW });
};

/** The output one process on its own gives for `input`. */
const reference = async (input: string) => {
  await using storage = memoryStorage();
  await using node = await createNode({ storage, models });
  return (await (await node.run(clusterCrew, { input })).result()).output;
};

const startNode = async (nodeId: string, world: string, extra: string[] = [], env: Record<string, string> = {}): Promise<TroupeProcess> => {
  const proc = fx.spawn(['node', '--db', db.url, '--crew', CREW, '--node-id', nodeId, '--poll-ms', '100', ...extra], { TROUPE_WORLD: world, ...env });
  await proc.waitFor(/ready: taking runs of cluster-crew/);
  return proc;
};

const statuses = async () => sql<{ run_id: string; status: string; output: string | null; owner: string | null; resumes: number }>('SELECT run_id, status, output, owner, resumes FROM troupe_runs ORDER BY run_id');

describe('troupe node on one Postgres database', () => {
  it('runs 20 crews on three nodes; a SIGKILLed node\'s runs finish on the others with the single-process outputs and no effect twice', async () => {
    const world = await fx.dir();
    const ids = Array.from({ length: 20 }, (_, i) => `c${String(i).padStart(2, '0')}`);
    const task = (id: string) => `task ${id}`;
    const expected = await reference(task('c00'));
    expect(expected).toBe('Stamped twice for: task c00');
    const env = { TROUPE_SCRIPTED_LATENCY_MS: '150' };
    const nodes = await Promise.all(['n1', 'n2', 'n3'].map((id) => startNode(id, world, ['--concurrency', '4', '--lease-ms', '1500'], env)));
    await submit(ids, task);
    // Mid-run: n1 has stamped for some run and, with 20 runs for 12 slots, holds unfinished ones.
    await nodes[0]!.waitFor(/tool stamp ok/);
    const held = (await sql<{ run_id: string }>(`SELECT run_id FROM troupe_claims WHERE owner LIKE 'n1.%' AND expires_at IS NOT NULL AND run_id NOT LIKE 'node:%'`)).map((r) => r.run_id);
    nodes[0]!.child.kill('SIGKILL');
    expect((await nodes[0]!.exit).signal).toBe('SIGKILL');
    expect(held.length).toBeGreaterThan(0);

    // The others finish everything; a run killed inside its irreversible call waits for a human,
    // who answers as the crash trials do: it happened (the world has it), or run it.
    await expect
      .poll(async () => (await statuses()).every((r) => r.status === 'completed' || r.status === 'waiting') && (await statuses()).length === 20, { timeout: 30_000, interval: 100 })
      .toBe(true);
    for (const { run_id, status } of await statuses()) {
      if (status !== 'waiting') continue;
      const approval = await (async () => {
        await using storage = await postgresStorage({ connectionString: db.url });
        return (await createRunStore(storage).listApprovals()).find((a) => a.runId === run_id && a.status === 'pending')!;
      })();
      const { n } = approval.args as { n: number };
      const happened = readStamps(world).some((s) => s.run === run_id && s.n === n);
      const decided = await runTroupe(['approve', approval.id, '--db', db.url, ...(happened ? ['--result', JSON.stringify({ stamped: n })] : [])], { TROUPE_WORLD: world });
      expect(decided.code, decided.stderr).toBe(0);
    }
    const done = await statuses();
    expect(done.map((r) => r.status)).toEqual(ids.map(() => 'completed'));
    for (const r of done) expect(r.output).toBe(`Stamped twice for: ${task(r.run_id)}`);
    // n1's unfinished runs were taken over: by the other nodes, or by the approving command.
    for (const id of held) expect(done.find((r) => r.run_id === id)!.owner).not.toMatch(/^n1\./);
    // Every run stamped exactly twice (1, then 2); no call's effect happened twice.
    const stamps = readStamps(world);
    expect(new Set(stamps.map((s) => s.key)).size).toBe(stamps.length);
    for (const id of ids) expect(stamps.filter((s) => s.run === id).map((s) => s.n).sort()).toEqual([1, 2]);
    for (const proc of nodes.slice(1)) proc.child.kill('SIGTERM');
    for (const proc of nodes.slice(1)) expect((await proc.exit).code).toBe(0);
  }, 90_000);

  it('stops an owner frozen past its lease once it wakes: its run was taken over, and it writes nothing', async () => {
    const world = await fx.dir();
    // n4's model calls take long: it is frozen while one is in flight.
    const frozen = await startNode('n4', world, ['--lease-ms', '600'], { TROUPE_SCRIPTED_LATENCY_MS: '1500' });
    await submit(['frozen-1'], () => 'frozen task');
    await frozen.waitFor(/^run frozen-1$/);
    frozen.child.kill('SIGSTOP');
    fx.defer(async () => frozen.child.kill('SIGCONT'));
    const taker = await startNode('n5', world, ['--lease-ms', '600'], { TROUPE_SCRIPTED_LATENCY_MS: '20' });
    await expect.poll(async () => (await statuses()).find((r) => r.run_id === 'frozen-1')?.status, { timeout: 20_000, interval: 100 }).toBe('completed');
    const [after] = await statuses().then((rows) => rows.filter((r) => r.run_id === 'frozen-1'));
    expect(after!.owner).toMatch(/^n5\./);
    const snapshot = () => sql<{ sum: string }>(`SELECT md5(string_agg(key || ':' || encode(value, 'hex'), ',' ORDER BY key)) AS sum FROM troupe_kv`);
    const before = await snapshot();
    frozen.child.kill('SIGCONT');
    await frozen.waitFor(/run frozen-1: lease lost, another node executes it now; stopped here/);
    // Nothing n4 did after waking reached the database: no checkpoint, no audit record, no effect.
    expect(await snapshot()).toEqual(before);
    expect(readStamps(world).filter((s) => s.run === 'frozen-1').map((s) => s.n).sort()).toEqual([1, 2]);
    expect(await sql(`SELECT key FROM troupe_kv WHERE key LIKE 'audit.n4:%'`)).toEqual([]);
    for (const proc of [frozen, taker]) proc.child.kill('SIGTERM');
    for (const proc of [frozen, taker]) expect((await proc.exit).code).toBe(0);
  }, 60_000);
});
