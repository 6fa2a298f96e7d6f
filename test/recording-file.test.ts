import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createNode, ErrorCode, scriptedModel, staticSecrets, type Storage } from '../index.js';
import { replayRecording } from '../testing.js';
import { canonicalJson } from '../core/audit-log.js';
import { layout } from '../core/layout.js';
import { exportRecording, importRecording, parseRecording } from '../core/replay/recording-file.js';
import { createRunStore, put } from '../core/run-store.js';
import { levelStorage } from '../storage/level.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';
import { tempDir } from './helpers/temp.js';

async function keysOf(storage: Storage): Promise<string[]> {
  const out: string[] = [];
  for await (const [key] of storage.entries({})) out.push(key);
  return out;
}

describe('portable recordings', () => {
  it('exports a run to one file that imports into a fresh database and replays there as a regression test', async () => {
    await using dir = await tempDir();
    const file = join(dir.path, 'rec.json');
    {
      await using storage = await levelStorage({ path: join(dir.path, 'live') });
      await using node = await createNode({ storage, auditDir: false, models: { scripted: scriptedModel({ script: pairScript }) } });
      await (await node.run(twoAgentCrew(), { input: 'brief me', runId: 'rec' })).result();
      await writeFile(file, JSON.stringify(await exportRecording(storage, 'rec', { now: 0 })));
    }
    const recording = parseRecording(await readFile(file));
    expect(recording).toMatchObject({ format: 'troupe.recording', version: 1, runId: 'rec', crew: 'pair', exportedAt: 0 });

    await using fresh = await levelStorage({ path: join(dir.path, 'fresh') });
    const { keys } = await importRecording(fresh, recording);
    expect(keys).toBe(recording.entries.length);
    const store = createRunStore(fresh);
    expect(await store.requireRun('rec')).toMatchObject({ status: 'completed', crew: 'pair' });
    expect((await store.ledger('rec')).length).toBe(6);
    // The imported run is as good as the original: its history reads, a replay finds it whole.
    await using node = await createNode({ storage: fresh, auditDir: false, resume: false });
    expect((await node.history('rec')).length).toBeGreaterThan(3);
    expect(await node.replay('rec', { crew: twoAgentCrew() })).toMatchObject({ clean: true, calls: { served: 6 } });

    const looked: string[] = [];
    expect(await replayRecording(file, twoAgentCrew({ calls: looked }))).toMatchObject({ clean: true, ended: 'finished', divergences: [] });
    expect(looked).toEqual([]);
    const changed = await replayRecording(file, twoAgentCrew({ writer: { instructions: 'Write tersely.' } }));
    expect(changed.divergences[0]).toMatchObject({ kind: 'conversation', agent: 'writer', step: 1, recorded: 'message 1 of 2: system: "Write."' });

    // Never over a run that exists: the second import writes nothing.
    const before = await keysOf(fresh);
    await expect(importRecording(fresh, recording)).rejects.toMatchObject({ code: ErrorCode.RUN_ALREADY_ACTIVE });
    expect(await keysOf(fresh)).toEqual(before);
  });

  it('refuses a damaged, altered, foreign or oversized file with a clear error, so nothing of it is imported', async () => {
    await using dir = await tempDir();
    await using storage = await levelStorage({ path: join(dir.path, 'db') });
    {
      await using node = await createNode({ storage, auditDir: false, models: { scripted: scriptedModel({ script: pairScript }) } });
      await (await node.run(twoAgentCrew(), { input: 'brief me', runId: 'rec' })).result();
    }
    const good = JSON.stringify(await exportRecording(storage, 'rec'));
    const refused = (text: string, limits = {}) => {
      try {
        parseRecording(text, limits);
      } catch (error) {
        expect(error).toMatchObject({ code: ErrorCode.RECORDING_INVALID });
        return (error as Error).message;
      }
      throw new Error('accepted');
    };
    expect(refused(good.slice(0, good.length / 2))).toMatch(/^not a usable recording: it is not JSON \(truncated or damaged\).*; nothing was imported$/);
    expect(refused(good.replace('"brief me"', '"brief you"'))).toContain('its digest does not match its content');
    expect(refused(JSON.stringify({ ...JSON.parse(good), version: 9 }))).toContain('version: Invalid input: expected 1');
    expect(refused(good, { maxBytes: 1000 })).toMatch(/the file has \d+ bytes, more than the limit of 1000/);
    // Well-formed files a forger made (the digest recomputed): another run's key, a ledger entry filed under another call.
    const forge = (change: (entries: Array<{ k: string; v?: unknown }>) => void) => {
      const forged = JSON.parse(good) as { entries: Array<{ k: string; v?: unknown }>; digest: string };
      change(forged.entries);
      forged.digest = createHash('sha256').update(canonicalJson(forged.entries)).digest('hex');
      return JSON.stringify(forged);
    };
    expect(refused(forge((entries) => entries.push({ k: 'run:other', v: { id: 'other' } })))).toContain("key run:other is not one of run rec's");
    const moved = forge((entries) => {
      const entry = entries.find((e) => e.k === 'ledger:rec:writer/t1/s1/model')!;
      entry.k = 'ledger:rec:writer/t1/s2/model';
    });
    expect(refused(moved)).toContain('ledger entry ledger:rec:writer/t1/s2/model is malformed or filed under another call id');
  });

  it('scrubs the values of the run\'s secrets from the file, and lists the ones it could not resolve', async () => {
    await using dir = await tempDir();
    await using storage = await levelStorage({ path: join(dir.path, 'db') });
    {
      await using node = await createNode({ storage, auditDir: false, models: { scripted: scriptedModel({ script: pairScript }) } });
      await (await node.run(twoAgentCrew(), { input: 'brief me', runId: 'rec' })).result();
    }
    // A ledger entry written before a redaction rule existed, holding a token in the clear.
    const leaked = { callId: 'researcher/t9/s1/tool/x', kind: 'tool', status: 'done', name: 'lookup', result: { content: 'token tok-123-secret' }, ts: 0, secrets: ['API_TOKEN', 'GONE'] };
    await storage.write([put(layout.ledger('rec', leaked.callId), leaked)]);
    const file = await exportRecording(storage, 'rec', { secrets: staticSecrets({ API_TOKEN: 'tok-123-secret' }) });
    expect(file.secrets).toEqual({ redacted: ['API_TOKEN'], unresolved: ['GONE'] });
    const text = JSON.stringify(file);
    expect(text).not.toContain('tok-123-secret');
    expect(text).toContain('token [redacted]');
  });
});
