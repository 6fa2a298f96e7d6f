import { describe, expect, it } from 'vitest';
import { createNode, memoryStorage, scriptedModel, type ModelProvider, type Storage } from '../index.js';
import { decode } from '../core/codec.js';
import { layout, seqOf } from '../core/layout.js';
import { createRunStore, put } from '../core/run-store.js';
import { levelStorage } from '../storage/level.js';
import { failure } from './helpers/failure.js';
import { twoAgentCrew } from './helpers/fixtures.js';
import { dump, rewriteRunToLayout1 } from './helpers/layout-v1.js';
import { tempDir } from './helpers/temp.js';

/**
 * A database written before Kernel v2 (layout 1: whole deep snapshots in `ckpt:`, long
 * strings in `blob:`) opens with the current code: its runs resume, list their history and
 * fork, and write layout 2 from then on. The layout-1 database is made from a real run:
 * the current code runs a crew partway on LevelDB, then test/helpers/layout-v1.ts rewrites
 * that run's storage into layout 1.
 */

// Longer than BLOB_MIN_CHARS (512): layout 1 kept such strings of a snapshot in blobs.
const definition = (word: string) => `${word}: ${'a long definition, '.repeat(40)}end`;

const migrationCrew = (tools: string[] = []) => twoAgentCrew({ id: 'legacy', calls: tools, define: definition });

const script = {
  researcher: [
    { text: 'looking up actors', toolCalls: [{ name: 'lookup', args: { word: 'actor' } }] },
    { text: 'looking up states', toolCalls: [{ name: 'lookup', args: { word: 'state' } }] },
    'findings: actor, state',
  ],
  writer: ['final: a brief about actor and state'],
};

/** Counts the calls that reach the model; the researcher's third call hangs when `hang`. */
function model(hang: boolean) {
  const calls: string[] = [];
  const scripted = scriptedModel({ script, latencyMs: 0 });
  const provider: ModelProvider = {
    id: 'scripted',
    generate: (req, ctx) => {
      calls.push(`${req.agent}#${req.step}`);
      if (hang && req.agent === 'researcher' && req.step === 3) {
        return new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true }));
      }
      return scripted.generate(req, ctx);
    },
  };
  return { provider, calls };
}

const RUN = 'legacy-1';

/** Runs the crew on `storage` until the researcher's third model call is in flight, then stops the node. */
async function runPartway(storage: Storage, tools: string[]) {
  const first = model(true);
  await using node = await createNode({ storage, models: { scripted: first.provider } });
  const run = await node.run(migrationCrew(tools), { input: 'brief me', runId: RUN });
  await new Promise<void>((resolve) => {
    const off = run.subscribe((e) => {
      if (e.type === 'checkpoint' && first.calls.length === 3) {
        off();
        resolve();
      }
    });
  });
}

/** The stored `ckpt:` values of a run, raw (a manifest in layout 2, a whole snapshot in layout 1). */
async function rawCheckpoints(storage: Storage, runId: string) {
  const out: Array<{ seq: number; schemaVersion: number; snapshot?: unknown; rootId?: string }> = [];
  for await (const [key, value] of storage.entries(layout.checkpoints(runId))) {
    const raw = decode(value, Infinity) as { seq: number; schemaVersion: number };
    expect(raw.seq).toBe(seqOf(key));
    out.push(raw);
  }
  return out;
}

async function countKeys(storage: Storage, range: ReturnType<typeof layout.actors>) {
  let n = 0;
  for await (const _ of storage.entries(range)) n += 1;
  return n;
}

/** A LevelDB database in layout 1 holding run `legacy-1`, stopped partway, and what its history said in layout 2. */
async function legacyDatabase(path: string, tools: string[]) {
  await using storage = await levelStorage({ path });
  await runPartway(storage, tools);
  const store = createRunStore(storage);
  const history = await store.checkpointStates(RUN, 'crew');
  const rewritten = await rewriteRunToLayout1(storage, RUN);
  expect(rewritten).toEqual(history.map((h) => h.seq));
  return { history, v1: rewritten };
}

describe('a layout-1 database', () => {
  it('a database in the old layout opens with its runs intact', async () => {
    // What the run produces when nothing interrupts it.
    const uninterrupted = await (async () => {
      await using storage = memoryStorage();
      await using node = await createNode({ storage, models: { scripted: model(false).provider } });
      return (await (await node.run(migrationCrew(), { input: 'brief me', runId: 'whole' })).result()).output;
    })();
    expect(uninterrupted).toBe('final: a brief about actor and state');

    await using dir = await tempDir();
    const tools: string[] = [];
    const { history: before, v1 } = await legacyDatabase(dir.path, tools);
    expect(tools).toEqual(['actor', 'state']);
    expect(v1.length).toBeGreaterThan(3);

    await using storage = await levelStorage({ path: dir.path });
    // It really is layout 1: whole snapshots, long strings in blobs, no records, logs or seen ring.
    const old = await rawCheckpoints(storage, RUN);
    expect(old.map((c) => c.schemaVersion)).toEqual(v1.map(() => 1));
    expect(old.every((c) => c.snapshot !== undefined && c.rootId === undefined)).toBe(true);
    expect(await countKeys(storage, layout.actors(RUN))).toBe(0);
    expect(await countKeys(storage, layout.logs(RUN))).toBe(0);
    expect(await countKeys(storage, layout.seens(RUN))).toBe(0);
    expect(JSON.stringify(old.at(-1)!.snapshot)).not.toContain('a long definition');
    expect(JSON.stringify(old.at(-1)!.snapshot)).toContain('\\u0000blob');

    // A new node resumes it as it starts, and only the unfinished work is done.
    const second = model(false);
    await using node = await createNode({ storage, models: { scripted: second.provider }, crews: [migrationCrew(tools)] });
    const run = node.get(RUN);
    expect(run).toBeDefined();
    expect((await run!.result()).output).toBe(uninterrupted);
    expect(second.calls).toEqual(['researcher#3', 'writer#1']);
    expect(tools).toEqual(['actor', 'state']);
    const store = createRunStore(storage);
    expect(await store.requireRun(RUN)).toMatchObject({ status: 'completed', resumes: 1, output: uninterrupted });

    // The history still lists every old checkpoint with its states, then the new ones.
    const history = await node.history(RUN);
    expect(history.map((h) => h.seq)).toEqual(history.map((_, i) => i + 1));
    expect(history.slice(0, v1.length)).toEqual(before);
    expect(history.length).toBeGreaterThan(v1.length);
    for (const entry of history) expect(Object.keys(entry.states).sort()).toEqual(['crew', 'researcher', 'writer']);
    expect(history.at(-1)!.states.crew).toBe('done');

    // Checkpoints written after the resume are layout 2: manifests, with actor records.
    const after = await rawCheckpoints(storage, RUN);
    expect(after.slice(0, v1.length).map((c) => c.schemaVersion)).toEqual(v1.map(() => 1));
    const fresh = after.slice(v1.length);
    expect(fresh.length).toBeGreaterThan(0);
    for (const c of fresh) expect(c).toMatchObject({ schemaVersion: 2, rootId: 'crew' });
    expect(fresh.every((c) => c.snapshot === undefined)).toBe(true);
    expect(await countKeys(storage, layout.actors(RUN))).toBeGreaterThan(0);
    expect(await store.latestCheckpoint(RUN)).toMatchObject({ schemaVersion: 2, machine: { id: 'legacy', version: '1' } });

    // A fork from an old checkpoint (the researcher about to run its second lookup) completes
    // with the same output, replaying the recorded work before the fork point.
    const at = [...before].reverse().find((h) => h.states.researcher === 'acting');
    expect(at).toBeDefined();
    expect(old.find((c) => c.seq === at!.seq)!.schemaVersion).toBe(1);
    const forked = model(false);
    const forkTools: string[] = [];
    await using forkNode = await createNode({ storage, resume: false, models: { scripted: forked.provider } });
    const fork = await forkNode.fork(RUN, { at: at!.seq, runId: 'legacy-fork', definition: migrationCrew(forkTools) });
    expect((await fork.result()).output).toBe(uninterrupted);
    expect(forked.calls).toEqual(['researcher#3', 'writer#1']);
    expect(await store.requireRun('legacy-fork')).toMatchObject({ status: 'completed', forkedFrom: { runId: RUN, checkpoint: at!.seq } });
    const forkCheckpoints = await rawCheckpoints(storage, 'legacy-fork');
    expect(forkCheckpoints[0]!.schemaVersion).toBe(1);
    for (const c of forkCheckpoints.slice(1)) expect(c.schemaVersion).toBe(2);
    const forkHistory = await forkNode.history('legacy-fork');
    expect(forkHistory[0]!.states).toEqual(at!.states);
    expect(forkHistory.at(-1)!.states.crew).toBe('done');
  });

  it('a checkpoint with a schemaVersion newer than the code is refused with SNAPSHOT_VERSION, and the database is left byte-identical', async () => {
    await using dir = await tempDir();
    const { v1 } = await legacyDatabase(dir.path, []);
    await using storage = await levelStorage({ path: dir.path });
    const latest = (await rawCheckpoints(storage, RUN)).at(-1)!;
    const newer = v1.at(-1)! + 1;
    await storage.write([put(layout.checkpoint(RUN, newer), { ...latest, seq: newer, schemaVersion: 3 })]);
    const bytes = await dump(storage);

    await using node = await createNode({ storage, resume: false, models: { scripted: model(false).provider } });
    const refused = await failure(node.resume(RUN, migrationCrew()));
    expect(refused.code).toBe('SNAPSHOT_VERSION');
    expect(refused.message).toMatch(/written by a newer Troupe/);
    // Nor can a fork start from it.
    const fork = await failure(node.fork(RUN, { at: newer, runId: 'newer-fork', definition: migrationCrew() }));
    expect(fork.code).toBe('SNAPSHOT_VERSION');
    // The same for a layout-1 checkpoint of a machine version no migration leads from.
    const unreachable = await failure(node.fork(RUN, { at: v1[0]!, runId: 'version-fork', definition: { ...migrationCrew(), version: '2' } }));
    expect(unreachable.code).toBe('SNAPSHOT_VERSION');
    // Nor is it read as an older layout by the store's readers (history, inspect, fork).
    await expect(createRunStore(storage).latestCheckpoint(RUN)).rejects.toMatchObject({ code: 'SNAPSHOT_VERSION' });
    await expect(createRunStore(storage).checkpoint(RUN, newer)).rejects.toMatchObject({ code: 'SNAPSHOT_VERSION' });
    await node.close();
    expect(await dump(storage)).toEqual(bytes);

    // Nor does a node that resumes everything as it starts.
    await expect(createNode({ storage, models: { scripted: model(false).provider }, crews: [migrationCrew()] })).rejects.toMatchObject({ code: 'SNAPSHOT_VERSION' });
    expect(await dump(storage)).toEqual(bytes);
  });
});
