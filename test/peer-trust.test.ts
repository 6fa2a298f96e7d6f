import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { Envelope } from '../core/envelope.js';
import { prefixRange } from '../core/storage.js';
import { createRunStore } from '../core/run-store.js';
import { levelStorage } from '../storage/level.js';
import type { WsTransportStats } from '../transports/ws.js';
import { runTroupe, spawnTroupe, type TroupeProcess } from './helpers/cli.js';
import { watchLines } from './helpers/lines.js';
import { tempDir } from './helpers/temp.js';

const EXAMPLE = 'examples/distributed-crew.ts';
const SECRET = 'peer-trust-secret-0123456789';
const ENV = { TROUPE_SECRET: SECRET, TROUPE_DISTRIBUTED: '1', TROUPE_SCRIPTED_LATENCY_MS: '0' };
const HOSTILE = fileURLToPath(new URL('./fixtures/hostile-peer.ts', import.meta.url));

async function startNode(id: string, db: string): Promise<{ proc: TroupeProcess; url: string }> {
  const proc = spawnTroupe(['node', '--node-id', id, '--listen', '127.0.0.1:0', '--db', db, '--crew', EXAMPLE], ENV);
  const line = await proc.waitFor(/^node \S+ listening on ws:\/\//);
  await proc.waitFor(/^node \S+ ready/);
  return { proc, url: line.slice(line.indexOf('ws://')) };
}

/** Runs the hostile peer to the end: the stats it printed once `to` acknowledged everything. */
async function hostile(nodeId: string, url: string, envelopes: Envelope[], repeat: number): Promise<WsTransportStats> {
  const child = spawn(process.execPath, ['--import', 'tsx', HOSTILE, JSON.stringify({ nodeId, secret: SECRET, peer: { id: 'b', url }, envelopes, repeat })], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exit = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const lines = watchLines(child.stdout!, exit, () => `${lines.lines.join('\n')}\n${stderr}`);
  const line = await lines.waitFor(/^flushed /);
  await exit;
  return JSON.parse(line.slice('flushed '.length)) as WsTransportStats;
}

const envelope = (id: string, from: string, to: string, type: string, payload: unknown, extra: Partial<Envelope> = {}): Envelope => ({ id, from, to, type, payload, seq: 0, ts: 1, ...extra });
const spawnOf = (runId: string, payload: Record<string, unknown>) =>
  envelope(`spawn_${runId}`, `${runId}/crew`, `${runId}/_part.b`, 'troupe.spawn', { crew: 'distributed-crew', version: '1', input: 'x', origin: 'a', actors: ['researcher'], ...payload });

describe('a node among hostile peers', () => {
  it('refuses malformed spawns, forged senders and relays for good, persists none of them, never imports a peer path, and serves a real run after', async () => {
    await using dbA = await tempDir();
    await using dbB = await tempDir();
    await using dbC = await tempDir();
    await using evil = await tempDir();
    const marker = join(evil.path, 'marker');
    const module = join(evil.path, 'evil-crew.mjs');
    await writeFile(module, `import { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(marker)}, 'ran');\nexport default {};\n`);

    const bad = [
      spawnOf('h1', { actors: 'researcher' }), // not an array
      spawnOf('h2', { actors: ['ghost'] }), // not an actor of the crew
      spawnOf('h3', { crew: 'nope' }), // not registered on b
      spawnOf('h4', { version: '99' }), // another version of the crew
      spawnOf('h5', { actors: ['writer'] }), // placed on c, not on b
      spawnOf('h6', { origin: 'c' }), // forged origin: the sender is a
      envelope('f1', 'h9/writer', 'h9/researcher', 'task', { content: 'forged' }), // writer lives on c
      envelope('f2', '_ask.c/x', 'h9/researcher', 'task', { content: 'forged' }), // c's ask inbox
      envelope('r1', 'h9/crew', 'h9/_part.zzz', 'troupe.end', { status: 'completed' }), // a part on an invented node
      envelope('r2', 'h9/crew', '_ask.zzz/c1', 'note', {}), // an invented node's ask inbox
      envelope('r3', 'h9/crew', 'h9/writer', 'task', { content: 'relay me' }), // for c, through b
    ];
    const b = await startNode('b', dbB.path);
    const c = await startNode('c', dbC.path);
    try {
      // A real part, except that its spawn names a module of the sender's choosing.
      const legit = spawnOf('h9', { source: module });
      const stats = await hostile('a', b.url, [legit, ...bad], 3);
      expect(stats.refusedByPeer).toBe(bad.length * 3);
      expect(stats.delivered).toBe(0);
      expect(existsSync(marker)).toBe(false);

      // Still serving: a real run across a, b and c.
      const run = await runTroupe(['run', EXAMPLE, '--node-id', 'a', '--db', dbA.path, '--run-id', 'x1', '--peer', `b=${b.url}`, '--peer', `c=${c.url}`], ENV);
      expect(run.stderr).not.toMatch(/Error/);
      expect(run.code).toBe(0);
    } finally {
      b.proc.child.kill('SIGTERM');
      c.proc.child.kill('SIGTERM');
      await Promise.all([b.proc.exit, c.proc.exit]);
    }
    expect(b.proc.lines.join('\n')).not.toMatch(/Error|uncaught/i);
    expect((await b.proc.exit).code).toBe(0);

    {
      await using storage = await levelStorage({ path: dbB.path });
      const store = createRunStore(storage);
      const runs = await store.listRuns();
      expect(runs.map((r) => r.id).sort()).toEqual(['h9', 'x1']);
      const part = runs.find((r) => r.id === 'h9')!;
      expect(part).toMatchObject({ part: { origin: 'a', actors: ['researcher'] } });
      expect(part.source).toBeUndefined();
      const keys: string[] = [];
      for await (const [key] of storage.entries(prefixRange(''))) keys.push(key);
      expect(keys.filter((k) => /zzz|(^|:)h[1-6](:|$|\/)/.test(k))).toEqual([]);
      expect(keys.filter((k) => k.startsWith('outbox:') || k.startsWith('outseq:')).every((k) => /^out(box|seq):(a|c)(:|$)/.test(k))).toBe(true);
      // Every refusal is remembered, within the ring's bound.
      expect(keys.filter((k) => k.startsWith('deadletter:') && k !== 'deadletter:next')).toHaveLength(bad.length * 3);
    }

    // The part's record carries no path; resuming it needs the operator's own crew module.
    const resumed = await runTroupe(['resume', 'h9', '--db', dbB.path], ENV);
    expect(resumed.code).not.toBe(0);
    expect(resumed.stderr).toMatch(/part hosted for node "a"; pass --crew/);
    expect(existsSync(marker)).toBe(false);
  }, 120_000);
});
