import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { levelStorage } from '../storage/level.js';
import { memoryStorage } from '../storage/memory.js';
import { createWsTransport } from '../transports/ws.js';
import { recorder } from '../testing/transport-conformance.js';
import { tempDir } from './helpers/temp.js';

const SECRET = 'transport-crash-secret-0123456789';
const SENDER = fileURLToPath(new URL('./fixtures/outbox-sender.ts', import.meta.url));

/**
 * Runs the sender until it has made `atLeast` envelopes durable, then SIGKILLs it wherever
 * it is (inside a group commit, between an acknowledgement and its deletes, mid-frame).
 * Resolves with the highest number it reported durable.
 */
async function sendThenKill(dir: string, peerUrl: string, prefix: string, atLeast: number): Promise<number> {
  const child = spawn(process.execPath, ['--import', 'tsx', SENDER, JSON.stringify({ dir, secret: SECRET, peerUrl, prefix })], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exit = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
  let reported = 0;
  let partial = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop()!;
      for (const line of lines) if (line.startsWith('durable ')) reported = Math.max(reported, Number(line.slice('durable '.length)));
      if (reported >= atLeast) resolve();
    });
    void exit.then(() => reject(new Error(`the sender ended before ${atLeast} durable sends: ${stderr}`)));
  });
  child.kill('SIGKILL');
  expect(await exit).toBe('SIGKILL');
  return reported;
}

describe('the outbox across SIGKILLs of the sender', () => {
  it('delivers every envelope a send resolved for before the kill, once and in order, after each of three kills and a restart', { timeout: 60_000 }, async () => {
    await using dir = await tempDir();
    const atB = recorder();
    await using b = await createWsTransport({ nodeId: 'b', storage: memoryStorage(), secret: SECRET, deliver: atB.deliver, listen: { host: '127.0.0.1', port: 0 } });
    const durable: Record<string, number> = {};
    for (const [prefix, atLeast] of [['i1', 2_000], ['i2', 3_000], ['i3', 1_000]] as const) durable[prefix] = await sendThenKill(dir.path, b.address!.url, prefix, atLeast);

    // The next process on the same database sends what the killed ones left.
    await using storage = await levelStorage({ path: dir.path });
    await using a = await createWsTransport({ nodeId: 'a', storage, secret: SECRET, peers: { b: b.address!.url }, deliver: async () => {}, reconnectMinMs: 10, reconnectMaxMs: 50 });
    await a.flushed('b');

    const seqs = atB.received.map((r) => r.seq);
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    expect(new Set(seqs).size).toBe(seqs.length);
    for (const prefix of Object.keys(durable)) {
      // Per sender incarnation: 1…m with no gap and no repeat, m at least what it reported.
      const numbers = atB.received.map((r) => r.envelope.id).filter((id) => id.startsWith(`${prefix}_`)).map((id) => Number(id.slice(prefix.length + 1)));
      expect(numbers.length).toBeGreaterThanOrEqual(durable[prefix]!);
      expect(numbers).toEqual(Array.from({ length: numbers.length }, (_, i) => i + 1));
    }
    // Nothing is left to send, and the acknowledged groups are gone from the database.
    await a.close();
    const left: string[] = [];
    for await (const [key] of storage.entries({ gte: 'outbox:', lt: 'outbox;' })) left.push(key);
    expect(left).toEqual([]);
  });
});
