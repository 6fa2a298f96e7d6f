import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runTroupe } from './helpers/cli.js';
import { useCleanups } from './helpers/cleanups.js';
import { inspectorClient } from './helpers/inspector-client.js';
import { useTestDatabase } from './helpers/postgres.js';
import { postgresStorage } from '../storage/postgres/index.js';
import { createRunStore } from '../core/run-store.js';

/** The commands with `--db postgres://…`: the same ones, on a database any machine can reach. */

const CREW = fileURLToPath(new URL('./fixtures/cluster-crew.ts', import.meta.url));

const db = useTestDatabase();

const fx = useCleanups();

describe('troupe commands on a postgres:// --db', () => {
  it('runs a crew, then lists, audits, verifies, shows history, forks and inspects it; refuses what does not apply', async () => {
    const world = { TROUPE_WORLD: await fx.dir(), TROUPE_SCRIPTED_LATENCY_MS: '0' };
    const ran = await runTroupe(['run', CREW, '--db', db.url, '--run-id', 'pg-1'], world);
    expect(ran.stderr).toBe('');
    expect(ran.code).toBe(0);
    expect(ran.stdout).toMatch(/\n\nStamped twice for: stamp it$/);

    const [runs, history, audit, verify, approvals, repair, node] = await Promise.all([
      // --storage is --db under the name a cluster's operators look for.
      runTroupe(['runs', '--storage', db.url, '--json']),
      runTroupe(['history', 'pg-1', '--db', db.url, '--json']),
      runTroupe(['audit', 'pg-1', '--db', db.url, '--json']),
      runTroupe(['audit', 'verify', '--db', db.url]),
      runTroupe(['approvals', '--db', db.url, '--json']),
      // What does not apply to a shared database is refused, saying why.
      runTroupe(['db', 'repair', '--db', db.url]),
      runTroupe(['node', '--db', db.url]),
    ]);
    expect(JSON.parse(runs.stdout).runs).toEqual([expect.objectContaining({ id: 'pg-1', status: 'completed', crew: 'cluster-crew' })]);
    const checkpoints = JSON.parse(history.stdout).history as Array<{ seq: number }>;
    expect(checkpoints.length).toBeGreaterThan(1);
    const kinds = audit.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l).kind as string);
    expect(kinds).toEqual(expect.arrayContaining(['run.started', 'model.call', 'tool.call', 'run.completed']));
    // One chain, of the node `troupe run` was (an id of its own, since the database is shared).
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    expect(verify.stdout).toMatch(/^node \S+-\d+-[0-9a-f]{6}: audit log intact: \d+ records/);
    expect(JSON.parse(approvals.stdout)).toEqual({ approvals: [] });
    expect(repair.code).toBe(2);
    expect(repair.stderr).toMatch(/repairs a LevelDB directory/);
    expect(node.code).toBe(2);
    expect(node.stderr).toMatch(/needs --crew <file>/);

    const forked = await runTroupe(['fork', 'pg-1', '--at', String(checkpoints[0]!.seq), '--run-id', 'pg-fork', '--db', db.url], world);
    expect(forked.code, forked.stderr).toBe(0);
    expect(forked.stdout).toMatch(/\n\nStamped twice for: stamp it$/);

    // The inspector reads the same database from here as any machine would.
    const inspect = fx.spawn(['inspect', '--db', db.url, '--port', '0']);
    const url = /^inspector (http:\/\/127\.0\.0\.1:\d+\/)/.exec(await inspect.waitFor(/^inspector http/))![1]!;
    const page = await inspectorClient(url, fx.defer);
    const listed = (await page.waitFor((m) => m.type === 'runs')) as unknown as { runs: Array<{ id: string; status: string }> };
    expect(listed.runs.map((r) => [r.id, r.status]).sort()).toEqual([['pg-1', 'completed'], ['pg-fork', 'completed']]);
    page.send({ type: 'select', runId: 'pg-fork' });
    const run = (await page.waitFor((m) => m.type === 'run')) as unknown as { timeline: Array<{ kind: string; actor?: string; state?: string }> };
    expect(run.timeline.filter((e) => e.kind === 'state' && e.actor === 'stamper').at(-1)?.state).toBe('done');
    inspect.child.kill('SIGINT');
    expect((await inspect.exit).code).toBe(0);
  }, 60_000);

  it('holds the run of a one-off command with its --lease-ms: killed, the run is free that soon instead of after the default 15 s', async () => {
    // The killed command's model calls take 3 s: killed once its first tool call's result is
    // durable, it is inside the next model call, so no irreversible call is left in doubt.
    const world = { TROUPE_WORLD: await fx.dir(), TROUPE_SCRIPTED_LATENCY_MS: '3000' };
    const lease = () => db.sql<{ live: boolean; ms: number }>("SELECT lease_live AS live, extract(epoch FROM lease_expires_at - clock_timestamp()) * 1000 AS ms FROM troupe_run_leases WHERE run_id = 'pg-lease'");
    const first = fx.spawn(['run', CREW, '--db', db.url, '--run-id', 'pg-lease', '--lease-ms', '1000', '--json'], world);
    await first.waitFor(/"type":"tool.call"/);
    // The event comes as the call's result is recorded, before the batch holding it is
    // durable: killed in between, the stamp would rightly be parked as in doubt (exit 3).
    {
      await using reader = await postgresStorage({ connectionString: db.url });
      const store = createRunStore(reader);
      await expect.poll(async () => (await store.ledger('pg-lease')).some((e) => e.kind === 'tool' && e.status === 'done'), { timeout: 20_000, interval: 20 }).toBe(true);
    }
    // Renewed every third of the lease: at most 1 s left at any moment (15 s by default).
    const held = (await lease())[0]!;
    expect(held.live).toBe(true);
    expect(Number(held.ms)).toBeLessThanOrEqual(1000);
    first.child.kill('SIGKILL');
    expect((await first.exit).signal).toBe('SIGKILL');
    expect(Number((await lease())[0]!.ms)).toBeLessThanOrEqual(1000);
    // Until the instant the database judges the lease by, then not a moment longer.
    await db.sql("SELECT pg_sleep(greatest(0, extract(epoch FROM expires_at - clock_timestamp()))) FROM troupe_claims WHERE run_id = 'pg-lease'");
    const resumed = await runTroupe(['resume', 'pg-lease', '--db', db.url], { ...world, TROUPE_SCRIPTED_LATENCY_MS: '0' });
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout).toMatch(/\n\nStamped twice for: stamp it$/);
  }, 60_000);
});
