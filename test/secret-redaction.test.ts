import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createRedactor } from '../advanced.js';
import { agent, createNode, crew, memoryStorage, scriptedModel, staticSecrets, tool, type RunEvent, type Storage } from '../index.js';
import { spawnTroupe, runTroupe } from './helpers/cli.js';
import { grepDirectory } from './helpers/grep-dir.js';
import { memoryNetwork } from './helpers/memory-network.js';
import { tempDir } from './helpers/temp.js';

/** A random needle that stays literal even in Snappy-compressed table files (see grepDirectory). */
const needle = () => randomBytes(24).toString('base64url');
const forms = (s: string) => [s, Buffer.from(s).toString('base64'), Buffer.from(s).toString('hex')];

/** Every stored key and value of `storage` that contains `text`. */
async function storedWith(storage: Storage, text: string): Promise<string[]> {
  const hits: string[] = [];
  const bytes = Buffer.from(text);
  for await (const [key, value] of storage.entries({})) if (key.includes(text) || Buffer.from(value).includes(bytes)) hits.push(key);
  return hits;
}

const useToken = tool({
  name: 'use_token',
  description: 'Uses the token.',
  input: z.object({}),
  effect: 'idempotent',
  secrets: ['TOKEN'],
  run: () => 'used',
});

describe('secret redaction', () => {
  it('scrubs base64 and hex forms of a secret too', () => {
    const secret = needle();
    const redact = createRedactor([secret]);
    const b64 = Buffer.from(secret).toString('base64');
    const out = redact({ plain: `x${secret}y`, b64, unpadded: b64.replace(/=+$/, ''), url: Buffer.from(secret).toString('base64url'), hex: Buffer.from(secret).toString('hex'), HEX: Buffer.from(secret).toString('hex').toUpperCase() });
    expect(JSON.stringify(out)).not.toMatch(new RegExp([secret, b64, Buffer.from(secret).toString('hex')].join('|'), 'i'));
    expect(out.plain).toBe('x[redacted]y');
  });

  it('scrubs run.events(), live events and the run result of a secret the model repeats', async () => {
    const secret = needle();
    await using storage = memoryStorage();
    const script = (req: { messages: readonly { role: string }[] }) =>
      req.messages.some((m) => m.role === 'tool') ? `the token is ${secret} (${Buffer.from(secret).toString('base64')})` : { toolCalls: [{ name: 'use_token', args: {} }] };
    await using node = await createNode({ storage, secrets: staticSecrets({ TOKEN: secret }), models: { scripted: scriptedModel({ script }) } });
    const live: RunEvent[] = [];
    node.subscribe((e) => live.push(e));
    const run = await node.run(crew({ id: 'sec', agents: [agent({ id: 'a', role: 'a', instructions: 'a', model: 'scripted', tools: [useToken] })] }), { input: 'go', runId: 's1' });
    const result = await run.result();
    const replayed: RunEvent[] = [];
    for await (const e of run.events()) replayed.push(e);
    expect(result.output).toBe('the token is [redacted] ([redacted])');
    for (const text of [JSON.stringify(result), JSON.stringify(live), JSON.stringify(replayed)]) for (const form of forms(secret)) expect(text).not.toContain(form);
    expect(live.find((e) => e.type === 'run.completed')).toMatchObject({ output: 'the token is [redacted] ([redacted])' });
    expect(await storedWith(storage, secret)).toEqual([]);
  });

  it('scrubs a secret resolved on a remote node before the envelope carrying it leaves that node', async () => {
    const secret = needle();
    const net = memoryNetwork();
    const script = (req: { agent: string; messages: readonly { role: string }[] }) =>
      req.agent === 'lead' ? 'lead done' : req.messages.some((m) => m.role === 'tool') ? `worker saw ${secret}` : { toolCalls: [{ name: 'use_token', args: {} }] };
    const def = () =>
      crew({
        id: 'remote-secret',
        agents: [agent({ id: 'worker', role: 'w', instructions: 'w', model: 'scripted', tools: [useToken] }), agent({ id: 'lead', role: 'l', instructions: 'l', model: 'scripted' })],
        placement: { worker: 'b' },
      });
    await using sa = memoryStorage();
    await using sb = memoryStorage();
    const models = { scripted: scriptedModel({ script }) };
    await using b = await createNode({ nodeId: 'b', storage: sb, transport: net.transport, crews: [def()], models, secrets: staticSecrets({ TOKEN: secret }) });
    await using a = await createNode({ nodeId: 'a', storage: sa, transport: net.transport, crews: [def()], models, secrets: staticSecrets({}) });
    const partDone = new Promise<void>((resolve) => b.subscribe((e) => e.type === 'run.completed' && resolve()));
    const run = await a.run(def(), { input: 'go', runId: 'rs1' });
    expect((await run.result()).status).toBe('completed');
    await partDone;
    const { output } = (await a.runs())[0]!;
    expect(output).toBe('lead done');
    // The lead's task held the worker's answer: the origin never learnt the secret, yet kept none of it.
    expect(await storedWith(sa, secret)).toEqual([]);
    expect(await storedWith(sb, secret)).toEqual([]);
    expect(JSON.stringify(await a.history('rs1'))).not.toContain(secret);
  });

  it('scrubs a secret used before a SIGKILL from what the resumed process persists', async () => {
    const secret = needle();
    await using db = await tempDir();
    const gate = join(db.path, 'gate');
    const env = { API_TOKEN: secret, SECRET_CREW_GATE: gate };
    const first = spawnTroupe(['run', 'test/fixtures/secret-crew.ts', '--db', join(db.path, 'db'), '--run-id', 'sk1', '--json'], env);
    // Killed while echo_config waits: use_token's result (resolved with the secret) is durable.
    await first.waitFor(/"type":"tool\.call".*"tool":"use_token"/);
    await new Promise<void>((resolve, reject) => {
      const poll = () => (existsSync(`${gate}.started`) ? resolve() : first.child.exitCode !== null ? reject(new Error(first.stderr())) : setTimeout(poll, 10));
      poll();
    });
    first.child.kill('SIGKILL');
    expect((await first.exit).signal).toBe('SIGKILL');
    await writeFile(gate, '');
    const resumed = await runTroupe(['resume', 'sk1', '--db', join(db.path, 'db'), '--json'], env);
    expect(resumed.stderr).toBe('');
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toContain('"type":"result"');
    for (const form of forms(secret)) {
      expect(resumed.stdout).not.toContain(form);
      expect(await grepDirectory(join(db.path, 'db'), form)).toEqual([]);
    }
    // The positive control: what the tool returned is in the store, scrubbed.
    expect(await grepDirectory(join(db.path, 'db'), '[redacted]')).not.toEqual([]);
  }, 60_000);
});
