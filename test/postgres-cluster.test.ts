import { describe, expect, it } from 'vitest';
import { createNode, scriptedModel, type RunEvent, type TroupeNode } from '../index.js';
import { postgresStorage } from '../storage/postgres/index.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';
import { useTestDatabase } from './helpers/postgres.js';
import { useCleanups } from './helpers/cleanups.js';
import { failure } from './helpers/failure.js';

/** Nodes in one process, each with its own storage object (pool) on one database: a cluster as the database sees it. */

const db = useTestDatabase();

const fx = useCleanups();

const clusterNode = async (nodeId: string, options: { concurrency?: number; leaseMs?: number } = {}): Promise<TroupeNode> => {
  const storage = await postgresStorage({ connectionString: db.url, ...(options.leaseMs ? { leaseMs: options.leaseMs } : {}) });
  fx.defer(() => storage.close());
  const node = await createNode({ storage, nodeId, crews: [twoAgentCrew()], models: { scripted: scriptedModel({ script: pairScript }) }, concurrency: options.concurrency ?? 2, pollMs: 50 });
  fx.defer(() => node.close());
  return node;
};

const sql = db.sql;

describe('a cluster on one Postgres database', () => {
  it('runs submitted runs on the nodes that take them, each run once, with the single-node output', async () => {
    const a = await clusterNode('a');
    const b = await clusterNode('b');
    const starts: string[] = [];
    for (const n of [a, b]) n.subscribe((e: RunEvent) => e.type === 'run.started' && starts.push(`${n.nodeId}:${e.runId}`));
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(await a.submit(twoAgentCrew(), { input: `brief ${i}`, runId: `sub-${i}` }));
    await expect
      .poll(async () => (await sql<{ n: number }>(`SELECT count(*)::int AS n FROM troupe_runs WHERE status = 'completed'`))[0]!.n, { timeout: 20_000, interval: 50 })
      .toBe(6);
    const rows = await sql<{ run_id: string; output: string; owner: string }>('SELECT run_id, output, owner FROM troupe_runs ORDER BY run_id');
    expect(rows.map((r) => r.run_id)).toEqual(ids);
    for (const row of rows) expect(row.output).toBe('final: a brief about actor and state');
    // Started once each, by one of the two nodes.
    expect(starts.map((s) => s.split(':')[1]).sort()).toEqual(ids);
    // Each node chained its own audit records.
    const chains = await sql<{ chain: string }>(`SELECT DISTINCT split_part(key, ':', 1) AS chain FROM troupe_kv WHERE key LIKE 'audit.%' ORDER BY 1`);
    expect(chains.map((c) => c.chain).every((c) => c === 'audit.a' || c === 'audit.b')).toBe(true);
    expect(await sql(`SELECT key FROM troupe_kv WHERE key LIKE 'audit:%'`)).toEqual([]);
  });

  it('refuses a second node with an id already in use on the database', async () => {
    await clusterNode('twin');
    const refused = await failure(clusterNode('twin'));
    expect(refused.code).toBe('CONFIG_INVALID');
    expect(refused.message).toMatch(/node id "twin" is in use/);
  });
});
