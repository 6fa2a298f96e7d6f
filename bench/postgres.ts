/**
 * Troupe on Postgres next to Troupe on LevelDB, measured in the same run:
 *
 * - steps: `runs` runs of a one-agent crew ({@link stepCrew}, `steps` model steps each, every
 *   one calling a trivial tool, scripted model without latency) on one node, `parallel` at a
 *   time (1, 10, 100): agent steps/s, and each run's step latency (time between its
 *   consecutive checkpoints) p50/p99, on LevelDB and on Postgres (`sync: false` both: a
 *   LevelDB write that survives the process being killed, a Postgres commit with
 *   `synchronous_commit = off`); ratios Postgres / LevelDB.
 * - nodes: the same 30 runs submitted to 1 node and to 3 nodes (three storage objects, three
 *   pools) on one database, in this one process: steps/s and the ratio. With 2 cores the
 *   three nodes share them; the figure says what the database's locking costs, not what three
 *   machines would gain.
 * - failover: two `troupe node` processes on one database, one long run; the node that took
 *   it is SIGKILLed; the time until the other prints that it resumed the run, against the
 *   target of lease + 1 s. Repeated `--trials` times.
 *
 *   node --conditions=troupe-source --import tsx bench/postgres.ts [--quick] [--trials N]
 *
 * Needs the Postgres server of the tests (`TROUPE_TEST_POSTGRES`, default
 * postgres://root@127.0.0.1:5432); creates and drops a database of its own. Prints one JSON
 * object. Not a test: nothing is asserted.
 */
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { createNode, scriptedModel, type RunEvent, type Storage } from '../index.js';
import { levelStorage } from '../storage/level.js';
import { postgresStorage } from '../storage/postgres/index.js';
import { machineInfo, repoFile, round, stepCrew, summarize, tempDir } from './durable-step.js';
import { testDatabase } from '../test/helpers/postgres-server.js';

const quick = process.argv.includes('--quick');
const trialsAt = process.argv.indexOf('--trials');
const trials = trialsAt > 0 ? Number(process.argv[trialsAt + 1]) : quick ? 1 : 3;
const BIN = repoFile('bin/dev.js');
const CREW = repoFile('test/fixtures/cluster-crew.ts');

/** A fresh database for one measurement, dropped afterwards. */
async function withDatabase<T>(work: (url: string) => Promise<T>): Promise<T> {
  await using db = await testDatabase({ prefix: 'troupe_bench' });
  return await work(db.url);
}

/** `runs` step-crew runs on `nodes`, started `parallel` at a time (submitted, when several nodes share the storage). */
async function measureSteps(storages: Storage[], o: { runs: number; parallel: number; steps: number; submit: boolean }) {
  const { def, script } = stepCrew('pgbench', o.steps);
  const nodes = await Promise.all(
    storages.map((storage, i) =>
      // The same runs at once in total, however many nodes share them.
      createNode({ storage, nodeId: `b${i}`, models: { scripted: scriptedModel({ script, latencyMs: 0 }) }, crews: [def], resume: false, concurrency: Math.ceil(o.parallel / storages.length), pollMs: 20 }),
    ),
  );
  let steps = 0;
  const lastCheckpoint = new Map<string, number>();
  const latencies: number[] = [];
  const done = new Set<string>();
  let allDone!: () => void;
  const finished = new Promise<void>((resolve) => (allDone = resolve));
  for (const node of nodes) {
    node.subscribe((event: RunEvent) => {
      if (event.type === 'model.call') steps += 1;
      else if (event.type === 'checkpoint') {
        const now = performance.now();
        const last = lastCheckpoint.get(event.runId);
        if (last !== undefined) latencies.push(now - last);
        lastCheckpoint.set(event.runId, now);
      } else if (event.type === 'run.completed' || event.type === 'run.failed') {
        done.add(event.runId);
        if (done.size === o.runs) allDone();
      }
    });
  }
  try {
    const start = performance.now();
    if (o.submit) {
      for (let i = 0; i < o.runs; i++) await nodes[0]!.submit(def, { input: 'go', runId: `s${i}` });
      await Promise.all(nodes.map((node) => node.resumeAll()));
      await finished;
    } else {
      let next = 0;
      await Promise.all(
        Array.from({ length: Math.min(o.parallel, o.runs) }, async () => {
          while (next < o.runs) {
            const i = next++;
            const result = await (await nodes[0]!.run(def, { input: 'go', runId: `r${i}` })).result();
            if (result.status !== 'completed') throw new Error(`run r${i} ended ${result.status}`);
          }
        }),
      );
    }
    const ms = performance.now() - start;
    return { nodes: nodes.length, parallel: o.parallel, runs: o.runs, agentSteps: steps, ms: round(ms), agentStepsPerSec: Math.round((steps / ms) * 1000), stepLatency: summarize(latencies) };
  } finally {
    await Promise.all(nodes.map((node) => node.close()));
  }
}

async function stepsOnLevel(o: { runs: number; parallel: number; steps: number }) {
  const dir = await tempDir('pg-level');
  const storage = await levelStorage({ path: dir });
  try {
    return await measureSteps([storage], { ...o, submit: false });
  } finally {
    await storage.close();
    await rm(dir, { recursive: true, force: true });
    await rm(`${dir}.audit`, { recursive: true, force: true });
  }
}

async function stepsOnPostgres(o: { runs: number; parallel: number; steps: number; nodes?: number; submit?: boolean }) {
  return withDatabase(async (url) => {
    const storages = await Promise.all(Array.from({ length: o.nodes ?? 1 }, () => postgresStorage({ connectionString: url, maxConnections: Math.min(20, o.parallel + 2) })));
    try {
      return await measureSteps(storages, { ...o, submit: o.submit ?? false });
    } finally {
      await Promise.all(storages.map((s) => s.close()));
    }
  });
}

/** `troupe node` as a child process; resolves with its stdout lines as they come. */
function node(url: string, nodeId: string, leaseMs: number, world: string) {
  const child = spawn(process.execPath, [BIN, 'node', '--db', url, '--crew', CREW, '--node-id', nodeId, '--lease-ms', String(leaseMs), '--poll-ms', '100'], {
    env: { ...process.env, NO_COLOR: '1', TROUPE_SCRIPTED_LATENCY_MS: '400', TROUPE_WORLD: world },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters: Array<{ pattern: RegExp; resolve: (at: number) => void }> = [];
  let partial = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    partial += chunk;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    for (const line of parts) {
      lines.push(line);
      for (const w of [...waiters]) {
        if (!w.pattern.test(line)) continue;
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(performance.now());
      }
    }
  });
  const waitFor = (pattern: RegExp) =>
    new Promise<number>((resolve) => {
      if (lines.some((l) => pattern.test(l))) return resolve(performance.now());
      waiters.push({ pattern, resolve });
    });
  const exit = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return { child, waitFor, exit, lines };
}

/** SIGKILL to "resumed from checkpoint" on the other node, `trials` times. */
async function failover(leaseMs: number) {
  const times: number[] = [];
  for (let t = 0; t < trials; t++) {
    const ms = await withDatabase(async (url) => {
      const world = await tempDir('pg-world');
      const a = node(url, 'fa', leaseMs, world);
      const b = node(url, 'fb', leaseMs, world);
      try {
        await Promise.all([a.waitFor(/ready: taking runs/), b.waitFor(/ready: taking runs/)]);
        const storage = await postgresStorage({ connectionString: url });
        const submitter = await createNode({ storage, nodeId: 'submitter', resume: false });
        const { default: crew } = await import('../test/fixtures/cluster-crew.js');
        await submitter.submit(crew, { input: 'long', runId: 'long-1', source: CREW });
        await submitter.close();
        await storage.close();
        // Whichever took it: killed once it has made progress.
        const owner = await Promise.race([a.waitFor(/tool stamp ok/).then(() => a), b.waitFor(/tool stamp ok/).then(() => b)]);
        const other = owner === a ? b : a;
        const killed = performance.now();
        owner.child.kill('SIGKILL');
        const resumed = await other.waitFor(/resumed from checkpoint/);
        return resumed - killed;
      } finally {
        for (const p of [a, b]) if (p.child.exitCode === null) p.child.kill('SIGKILL');
        await Promise.all([a.exit, b.exit]);
        await rm(world, { recursive: true, force: true });
      }
    });
    times.push(ms);
  }
  return { leaseMs, pollMs: 100, trials, ...summarize(times), targetMs: leaseMs + 1000, withinTarget: times.every((ms) => ms <= leaseMs + 1000) };
}

const steps = quick ? 5 : 20;
const levels = quick ? [1, 10] : [1, 10, 100];
const out: Record<string, unknown> = { machine: await machineInfo(), steps };
const byLevel: unknown[] = [];
for (const parallel of levels) {
  const runs = Math.max(parallel, 10);
  const level = await stepsOnLevel({ runs, parallel, steps });
  const postgres = await stepsOnPostgres({ runs, parallel, steps });
  byLevel.push({
    parallel,
    level,
    postgres,
    postgresOverLevel: {
      agentStepsPerSec: round(postgres.agentStepsPerSec / level.agentStepsPerSec),
      p50: round(postgres.stepLatency.p50Ms / level.stepLatency.p50Ms),
      p99: round(postgres.stepLatency.p99Ms / level.stepLatency.p99Ms),
    },
  });
}
out.concurrentRuns = byLevel;
const one = await stepsOnPostgres({ runs: 30, parallel: 12, steps, nodes: 1, submit: true });
const three = await stepsOnPostgres({ runs: 30, parallel: 12, steps, nodes: 3, submit: true });
out.nodes = { one, three, threeOverOne: round(three.agentStepsPerSec / one.agentStepsPerSec) };
out.failover = await failover(2_000);
process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
