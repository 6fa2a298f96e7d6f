import { createHash } from 'node:crypto';
import { cp, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditKey, canonicalJson, createAuditLog, GENESIS, hashRecord, macRecord, storedAuditHead, toJsonl, type AuditEntry, type AuditRecord } from '../core/audit-log.js';
import { auditKeyOf, HEADS_COMPACT_BYTES, openAuditSeal } from '../core/audit-seal.js';
import { openSealedAuditLog } from '../core/security.js';
import { manualClock } from '../core/clock.js';
import { decode, encode } from '../core/codec.js';
import { isTroupeError } from '../core/errors.js';
import { createRedactor } from '../core/secrets.js';
import type { Storage, StorageOp } from '../core/storage.js';
import { levelStorage } from '../storage/level.js';
import { memoryStorage } from '../storage/memory.js';
import { grepDirectory } from './helpers/grep-dir.js';
import { wrapStorage } from './helpers/wrap-storage.js';
import { tempDir } from './helpers/temp.js';

const entry = (n: number, runId = 'run_1'): AuditEntry => ({ kind: 'tool.call', runId, actor: 'researcher', data: { callId: `c${n}`, tool: 'lookup', ok: true } });
const entries = (from: number, count: number, runId?: string) => Array.from({ length: count }, (_, i) => entry(from + i, runId));

/** A database that can be closed and opened again, as after a process restart. */
interface Backend {
  storage: Storage;
  restart(): Promise<Storage>;
  [Symbol.asyncDispose](): Promise<void>;
}

const backends: [string, () => Promise<Backend>][] = [
  [
    'memory',
    async () => {
      const storage = memoryStorage();
      // The memory storage cannot survive its object; a "restart" is a new log on the same data.
      return { storage, restart: async () => storage, [Symbol.asyncDispose]: async () => {} };
    },
  ],
  [
    'LevelDB',
    async () => {
      const dir = await tempDir('troupe-audit-');
      const backend: Backend = {
        storage: await levelStorage({ path: dir.path }),
        async restart() {
          await backend.storage.close();
          backend.storage = await levelStorage({ path: dir.path });
          return backend.storage;
        },
        async [Symbol.asyncDispose]() {
          await backend.storage.close();
          await dir[Symbol.asyncDispose]();
        },
      };
      return backend;
    },
  ],
];

async function raw(storage: Storage, seq: number): Promise<AuditRecord> {
  return decode((await storage.get(auditKey(seq)))!, Infinity) as AuditRecord;
}

async function putRaw(storage: Storage, seq: number, value: unknown): Promise<void> {
  await storage.write([{ type: 'put', key: auditKey(seq), value: value instanceof Uint8Array ? value : encode(value) }]);
}

async function openLog(storage: Storage, clock = manualClock(1_000)) {
  const log = createAuditLog(storage, { clock });
  await log.open();
  return log;
}

describe.each(backends)('audit log on %s', (_name, makeBackend) => {
  it('chains records from the genesis hash and verifies them', async () => {
    await using backend = await makeBackend();
    const log = await openLog(backend.storage);
    const written = await log.write(entries(1, 3));
    const records = await log.read();
    expect(records).toEqual(written);
    expect(records.map((r) => r.seq)).toEqual([1, 2, 3]);
    expect(records[0]!.prev).toBe(GENESIS);
    for (const [i, r] of records.entries()) {
      expect(r.hash).toBe(createHash('sha256').update(canonicalJson({ ...r, hash: undefined })).digest('hex'));
      if (i > 0) expect(r.prev).toBe(records[i - 1]!.hash);
    }
    expect(records[0]).toMatchObject({ ts: 1_000, kind: 'tool.call', runId: 'run_1', actor: 'researcher', data: { callId: 'c1', tool: 'lookup', ok: true } });
    expect(log.head).toEqual({ seq: 3, hash: records[2]!.hash });
    expect(await log.verify()).toEqual({ ok: true, count: 3, head: log.head, keyed: 0, state: { checked: 0, absent: 0, superseded: 0 } });
  });

  it('continues the chain after a restart', async () => {
    await using backend = await makeBackend();
    const first = await openLog(backend.storage);
    await first.write(entries(1, 3));
    const head = first.head;

    const log = await openLog(await backend.restart());
    expect(log.head).toEqual(head);
    await log.write(entries(4, 2));
    const records = await log.read();
    expect(records.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(records[3]!.prev).toBe(head.hash);
    expect(await log.verify({ anchor: head })).toMatchObject({ ok: true, count: 5 });
  });

  it('writes appended ops in the caller\'s own batch, atomically with its checkpoint', async () => {
    await using backend = await makeBackend();
    const log = await openLog(backend.storage);
    const ops = log.append(entries(1, 2));
    expect(ops.map((op) => op.key)).toEqual(['audit:000000000001', 'audit:000000000002']);
    await backend.storage.write([{ type: 'put', key: 'ckpt:run_1:000000000001', value: encode({ seq: 1 }) }, ...ops]);
    log.commit(ops);
    expect(await log.verify()).toMatchObject({ ok: true, count: 2 });
    await log.write(entries(3, 1), { with: [{ type: 'put', key: 'ckpt:run_1:000000000002', value: encode({ seq: 2 }) }] });
    expect(await backend.storage.get('ckpt:run_1:000000000002')).toBeDefined();
    expect(await log.verify()).toMatchObject({ ok: true, count: 3 });
  });

  it('normalizes data so a record hashes the same after a round trip through storage', async () => {
    await using backend = await makeBackend();
    const log = await openLog(backend.storage);
    const data = {
      text: 'ünïcødé ✓', float: 0.1, big: 2 ** 53 + 2, huge: 1e300, negZero: -0, nan: Number.NaN, int: 42,
      bytes: new Uint8Array([0, 1, 255]), when: new Date(0), count: 10n, missing: undefined, fn: () => 1,
      nested: { list: [1, undefined, 'x'], map: new Map([['k', 1]]), set: new Set([2]) }, error: new Error('boom'),
    };
    await log.write([{ kind: 'model.call', runId: 'run_1', actor: 'writer', data }]);
    const [record] = await log.read();
    expect(record!.data).toEqual({
      text: 'ünïcødé ✓', float: 0.1, big: 2 ** 53 + 2, huge: 1e300, negZero: 0, nan: null, int: 42,
      bytes: { $base64: 'AAH/' }, when: '1970-01-01T00:00:00.000Z', count: '10',
      nested: { list: [1, null, 'x'], map: { k: 1 }, set: [2] }, error: { name: 'Error', message: 'boom' },
    });
    expect(hashRecord(record!)).toBe(record!.hash);
    expect(await log.verify()).toMatchObject({ ok: true });
  });

  describe('tamper detection', () => {
    async function fiveRecords(backend: Backend) {
      const log = await openLog(backend.storage);
      await log.write(entries(1, 5));
      // A fresh log object, as after a restart: it knows only what open() reads.
      return { writer: log, log: await openLog(backend.storage) };
    }

    it('detects a record whose content was rewritten', async () => {
      await using backend = await makeBackend();
      const { log } = await fiveRecords(backend);
      const r = await raw(backend.storage, 3);
      await putRaw(backend.storage, 3, { ...r, data: { ...r.data, ok: false } });
      expect(await log.verify()).toMatchObject({ ok: false, firstBad: 3, reason: 'altered' });
    });

    it('detects a rewritten record whose hash was recomputed, at the next link', async () => {
      await using backend = await makeBackend();
      const { log } = await fiveRecords(backend);
      const r = await raw(backend.storage, 3);
      const forged = { ...r, actor: 'someone-else' };
      await putRaw(backend.storage, 3, { ...forged, hash: hashRecord(forged) });
      expect(await log.verify()).toMatchObject({ ok: false, firstBad: 4, reason: 'broken-chain' });
    });

    it('detects bytes that are not a record', async () => {
      await using backend = await makeBackend();
      const { log } = await fiveRecords(backend);
      await putRaw(backend.storage, 2, new Uint8Array([0xc1, 0xff, 0x00]));
      expect(await log.verify()).toMatchObject({ ok: false, firstBad: 2, reason: 'altered' });
      await expect(log.read()).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'STORAGE_FAILED') && /audit record 2 is unreadable/.test(String(e)));
    });

    it.each([[1], [3]])('detects removed record %i', async (seq) => {
      await using backend = await makeBackend();
      const { log } = await fiveRecords(backend);
      await backend.storage.write([{ type: 'del', key: auditKey(seq) }]);
      expect(await log.verify()).toMatchObject({ ok: false, firstBad: seq, reason: 'removed' });
    });

    it('detects two records swapped', async () => {
      await using backend = await makeBackend();
      const { log } = await fiveRecords(backend);
      const [two, three] = [await raw(backend.storage, 2), await raw(backend.storage, 3)];
      await storageSwap(backend.storage, two, three);
      expect(await log.verify()).toMatchObject({ ok: false, firstBad: 2, reason: 'reordered' });
    });

    it('detects a removed record renumbered into the gap, at the broken link', async () => {
      await using backend = await makeBackend();
      const { log } = await fiveRecords(backend);
      const ops: StorageOp[] = [{ type: 'del', key: auditKey(5) }];
      for (const seq of [4, 5]) {
        const moved = { ...(await raw(backend.storage, seq)), seq: seq - 1 };
        ops.push({ type: 'put', key: auditKey(seq - 1), value: encode({ ...moved, hash: hashRecord(moved) }) });
      }
      await backend.storage.write(ops);
      expect(await log.verify()).toMatchObject({ ok: false, firstBad: 3, reason: 'broken-chain' });
    });

    it('detects removed newest records against what it committed, or against an anchor after a restart', async () => {
      await using backend = await makeBackend();
      const { writer, log } = await fiveRecords(backend);
      const anchor = writer.head;
      await backend.storage.write([{ type: 'del', key: auditKey(5) }, { type: 'del', key: auditKey(4) }]);
      expect(await writer.verify()).toMatchObject({ ok: false, firstBad: 4, reason: 'removed' });
      expect(await log.verify()).toMatchObject({ ok: false, firstBad: 4, reason: 'removed' });

      // The limit: a log opened after the truncation cannot tell without an anchor.
      const reopened = await openLog(backend.storage);
      expect(await reopened.verify()).toMatchObject({ ok: true, count: 3 });
      expect(await reopened.verify({ anchor })).toMatchObject({ ok: false, firstBad: 4, reason: 'removed' });
    });

    it('detects a whole chain rewritten consistently, against an anchor', async () => {
      await using backend = await makeBackend();
      const { writer } = await fiveRecords(backend);
      const anchor = writer.head;
      let prev = GENESIS;
      for (const r of await writer.read()) {
        const forged = { ...r, prev, data: { ...r.data, ok: false } };
        const hash = hashRecord(forged);
        await putRaw(backend.storage, r.seq, { ...forged, hash });
        prev = hash;
      }
      expect(await openLog(backend.storage).then((l) => l.verify())).toMatchObject({ ok: true, count: 5 });
      expect(await openLog(backend.storage).then((l) => l.verify({ anchor }))).toMatchObject({ ok: false, firstBad: 5, reason: 'altered' });
    });
  });
});

async function storageSwap(storage: Storage, a: AuditRecord, b: AuditRecord) {
  await storage.write([
    { type: 'put', key: auditKey(a.seq), value: encode(b) },
    { type: 'put', key: auditKey(b.seq), value: encode(a) },
  ]);
}

/** Memory storage whose next writes fail, like a full disk. */
function flakyStorage() {
  const inner = memoryStorage();
  let failures = 0;
  const storage: Storage & { failNext(n?: number): void } = Object.assign(
    wrapStorage(inner, async (_ops, _options, next) => {
      if (failures > 0) {
        failures--;
        throw new Error('disk full');
      }
      return next();
    }),
    {
      failNext(n = 1) {
        failures = n;
      },
    },
  );
  return storage;
}

describe('failed batches', () => {
  it('rewinds the head when the newest append\'s batch fails, so the next append reuses its seq', async () => {
    const storage = flakyStorage();
    const log = await openLog(storage);
    await log.write(entries(1, 2));
    const before = log.head;
    const ops = log.append(entries(3, 2));
    storage.failNext();
    await expect(storage.write(ops)).rejects.toThrow('disk full');
    await log.rollback(ops);
    expect(log.head).toEqual(before);
    await log.write(entries(5, 1));
    expect((await log.read()).map((r) => [r.seq, r.data.callId])).toEqual([[1, 'c1'], [2, 'c2'], [3, 'c5']]);
    expect(await log.verify()).toMatchObject({ ok: true, count: 3 });
  });

  it('write() rolls back by itself and rethrows', async () => {
    const storage = flakyStorage();
    const log = await openLog(storage);
    storage.failNext();
    await expect(log.write(entries(1, 1), { with: [{ type: 'put', key: 'ckpt:x', value: encode(1) }] })).rejects.toThrow('disk full');
    expect(log.head).toEqual({ seq: 0, hash: GENESIS });
    expect(await storage.get('ckpt:x')).toBeUndefined();
    await log.write(entries(2, 1));
    expect(await log.verify()).toMatchObject({ ok: true, count: 1 });
  });

  it('writes a failed append\'s records on their own when a later append already links to them', async () => {
    const storage = flakyStorage();
    const log = await openLog(storage);
    const runA = log.append(entries(1, 2, 'run_a'));
    const runB = log.append(entries(3, 1, 'run_b'));
    await storage.write(runB); // run B's checkpoint lands first
    log.commit(runB);
    storage.failNext();
    await expect(storage.write(runA)).rejects.toThrow('disk full');
    await log.rollback(runA);
    expect(await log.verify()).toMatchObject({ ok: true, count: 3 });
    expect(log.head.seq).toBe(3);
  });

  it('does not hold a failed batch to the values it committed to, once its records had to be written alone', async () => {
    const storage = flakyStorage();
    const log = await openLog(storage);
    const manifest = { type: 'put' as const, key: 'ckpt:run_a:000000000001', value: encode({ seq: 1 }) };
    const runA = log.append(entries(1, 2, 'run_a'), { state: { [manifest.key]: { sha256: createHash('sha256').update(manifest.value).digest('hex') } } });
    const runB = log.append(entries(3, 1, 'run_b'));
    await storage.write(runB);
    log.commit(runB);
    storage.failNext();
    await expect(storage.write([manifest, ...runA])).rejects.toThrow('disk full');
    await log.rollback(runA);
    // The run, resumed, writes its checkpoint 1 again with other content: no tampering.
    await storage.write([{ ...manifest, value: encode({ seq: 1, resumed: true }) }]);
    const records = await log.read();
    expect(records.map((r) => r.kind)).toEqual(['tool.call', 'tool.call', 'tool.call', 'audit.batch-failed']);
    expect(records[3]!.data).toEqual({ records: [2] });
    expect(await log.verify()).toMatchObject({ ok: true, count: 4, state: { checked: 0, absent: 0 } });
  });

  it('refuses appends after it could not restore the chain, until reopened', async () => {
    const storage = flakyStorage();
    const log = await openLog(storage);
    const runA = log.append(entries(1, 1));
    log.append(entries(2, 1));
    storage.failNext(2);
    await expect(storage.write(runA)).rejects.toThrow('disk full');
    await expect(log.rollback(runA)).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'STORAGE_FAILED'));
    expect(() => log.append(entries(3, 1))).toThrow(/call open\(\) again/);
    await log.open();
    await log.write(entries(3, 1));
    expect(await log.verify()).toMatchObject({ ok: true, count: 1 });
  });

  it('accepts batches committed out of order and verifies once all landed', async () => {
    const storage = memoryStorage();
    const log = await openLog(storage);
    const a = log.append(entries(1, 1));
    const b = log.append(entries(2, 1));
    await storage.write(b);
    log.commit(b);
    await storage.write(a);
    log.commit(a);
    expect(await log.verify()).toMatchObject({ ok: true, count: 2 });
  });
});

describe('the stored head', () => {
  it('is the newest record, however many keys that are not records sort after it', async () => {
    await using storage = memoryStorage();
    const log = createAuditLog(storage);
    await log.open();
    await storage.write(log.append([{ kind: 'run.started', runId: 'r1', actor: 'crew', data: {} }, { kind: 'run.completed', runId: 'r1', actor: 'crew', data: {} }]));
    await log.commit([]);
    // More stray keys than one probe reads, all after the records (letters sort after digits).
    await storage.write(Array.from({ length: 20 }, (_, i) => ({ type: 'put' as const, key: `audit:x${String(i).padStart(2, '0')}`, value: new Uint8Array([1]) })));
    expect((await storedAuditHead(storage)).seq).toBe(2);
  });
});

describe('misuse', () => {
  it('refuses to append before open(), which would restart sequence numbers', () => {
    expect(() => createAuditLog(memoryStorage()).append(entries(1, 1))).toThrow(/call open\(\) before append\(\)/);
  });

  it('refuses bad entries with a TypeError and leaves the log untouched', async () => {
    const log = await openLog(memoryStorage());
    expect(() => log.append([entry(1), { kind: '', runId: 'r', actor: 'a' }])).toThrow(/kind must be a string of 1 to 256/);
    expect(() => log.append([{ kind: 'x', runId: 'r', actor: 'a', data: [] as unknown as Record<string, unknown> }])).toThrow(/data must be a plain object/);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => log.append([{ kind: 'x', runId: 'r', actor: 'a', data: cyclic }])).toThrow(/cycles/);
    expect(log.head.seq).toBe(0);
  });

  it('refuses to commit or roll back ops it did not hand out, or twice', async () => {
    const log = await openLog(memoryStorage());
    const ops = log.append(entries(1, 1));
    log.commit(ops);
    expect(() => log.commit(ops)).toThrow(/not yet committed/);
    await expect(log.rollback(ops)).rejects.toThrow(TypeError);
    expect(() => log.commit([{ type: 'put', key: 'ckpt:x', value: new Uint8Array() }])).toThrow(TypeError);
  });
});

describe('reading and export', () => {
  it('filters by run, kind and position', async () => {
    const log = await openLog(memoryStorage());
    await log.write([...entries(1, 2, 'run_a'), { kind: 'permission', runId: 'run_b', actor: 'writer', data: { decision: 'deny' } }, ...entries(4, 1, 'run_b')]);
    expect((await log.read({ runId: 'run_b' })).map((r) => r.seq)).toEqual([3, 4]);
    expect((await log.read({ kind: 'permission' })).map((r) => r.seq)).toEqual([3]);
    expect((await log.read({ after: 2 })).map((r) => r.seq)).toEqual([3, 4]);
  });

  it('exports canonical JSON Lines that re-hash line by line', async () => {
    const log = await openLog(memoryStorage());
    await log.write(entries(1, 3));
    const jsonl = toJsonl(await log.read());
    const lines = jsonl.trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    expect(jsonl.endsWith('\n')).toBe(true);
    expect(lines[0]!.startsWith('{"actor":"researcher","data":{"callId":"c1","ok":true,"tool":"lookup"},"hash":')).toBe(true);
    for (const line of lines) {
      const { hash, ...rest } = JSON.parse(line) as AuditRecord;
      expect(createHash('sha256').update(canonicalJson(rest)).digest('hex')).toBe(hash);
    }
    expect(toJsonl([])).toBe('');
  });
});

describe('secrets', () => {
  it('keeps a planted secret off the disk when given a redactor', async () => {
    const secret = 'sk-PLANTED-q7Xv2LmR9tWb4KzN8cYd';
    await using plain = await tempDir('troupe-audit-plain-');
    await using redacted = await tempDir('troupe-audit-redacted-');
    const data = { args: { authorization: `Bearer ${secret}` } };
    {
      await using storage = await levelStorage({ path: plain.path });
      await (await openLog(storage)).write([{ kind: 'tool.call', runId: 'r', actor: 'a', data }]);
    }
    {
      await using storage = await levelStorage({ path: redacted.path });
      const log = createAuditLog(storage, { redact: createRedactor([secret]) });
      await log.open();
      await log.write([{ kind: 'tool.call', runId: 'r', actor: 'a', data }]);
      expect((await log.read())[0]!.data).toEqual({ args: { authorization: 'Bearer [redacted]' } });
    }
    expect(await grepDirectory(plain.path, secret)).not.toEqual([]); // positive control
    expect(await grepDirectory(redacted.path, secret)).toEqual([]);
  });
});

describe('one audit log per storage', () => {
  it('keeps one intact chain when two nodes on one storage run at the same time', async () => {
    const { createNode, scriptedModel } = await import('../index.js');
    const { pairScript, twoAgentCrew } = await import('./helpers/fixtures.js');
    await using storage = memoryStorage();
    await using a = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript }) } });
    await using b = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript }) } });
    const runs = await Promise.all([a.run(twoAgentCrew(), { input: 'x', runId: 'ra' }), b.run(twoAgentCrew(), { input: 'y', runId: 'rb' })]);
    await Promise.all(runs.map((r) => r.result()));
    const log = createAuditLog(storage);
    await log.open();
    expect(await log.verify()).toMatchObject({ ok: true });
    const records = await log.read();
    // Both runs' records, each sequence number once: nothing overwrote anything.
    expect(new Set(records.map((r) => r.runId))).toEqual(new Set(['ra', 'rb']));
    expect(records.map((r) => r.seq)).toEqual(records.map((_, i) => i + 1));
    expect(records.filter((r) => r.kind === 'run.completed')).toHaveLength(2);
  });
});

/**
 * A LevelDB database with its audit directory beside it (`<db>.audit`, as a node keeps it),
 * opened the way a node opens it, and reopened as after a restart.
 */
async function sealedDatabase() {
  const dir = await tempDir('troupe-audit-sealed-');
  const db = join(dir.path, 'db');
  const auditDir = `${db}.audit`;
  let storage = await levelStorage({ path: db });
  const fixture = {
    db,
    auditDir,
    get storage() {
      return storage;
    },
    /** The log as a freshly started node sees it. */
    open: () => openSealedAuditLog(storage, auditDir, manualClock(1_000)),
    /** The log as `troupe audit verify` sees it: the key is read, never created. */
    async verifier() {
      return createAuditLog(storage, { seal: await openAuditSeal(auditDir, { create: false }) });
    },
    async restart() {
      await storage.close();
      storage = await levelStorage({ path: db });
    },
    async [Symbol.asyncDispose]() {
      await storage.close();
      await dir[Symbol.asyncDispose]();
    },
  };
  return fixture;
}

type Sealed = Awaited<ReturnType<typeof sealedDatabase>>;

/** `count` records written and their heads saved, by a log that is then forgotten. */
async function written(db: Sealed, count: number) {
  const log = await db.open();
  await log.write(entries(1, count));
  await log.flush();
  return log;
}

/** The record an attacker without the key writes: correct sha256, linked to the head. */
function forgedAfter(head: AuditRecord, fields: Partial<AuditRecord> = {}): AuditRecord {
  const body = { seq: head.seq + 1, ts: head.ts, kind: 'tool.call', runId: 'run_1', actor: 'intruder', data: { ok: true }, prev: head.hash, ...fields };
  delete (body as Partial<AuditRecord>).hash;
  return { ...body, hash: hashRecord(body) };
}

describe('audit log sealed outside the database (key and saved heads)', () => {
  it('keys every record and verifies intact across restarts, with the saved head at the end of the log', async () => {
    await using db = await sealedDatabase();
    await written(db, 3);
    await db.restart();
    const log = await db.open();
    await log.write(entries(4, 2));
    await log.flush();
    await db.restart();
    const records = await (await db.verifier()).read();
    expect(records.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    const seal = await openAuditSeal(db.auditDir, { create: false });
    for (const r of records) {
      expect(r.keyId).toBe(seal.key.id);
      expect(r.hash).toBe(macRecord(r, seal.key));
      expect(r.hash).not.toBe(hashRecord(r));
    }
    expect(await (await db.verifier()).verify()).toEqual({ ok: true, count: 5, head: { seq: 5, hash: records[4]!.hash }, keyed: 5, saved: { seq: 5, hash: records[4]!.hash }, state: { checked: 0, absent: 0, superseded: 0 } });
    expect((await stat(join(db.auditDir, 'key'))).mode & 0o777).toBe(0o600);
  });

  it('detects the newest records deleted, with no anchor kept by hand, and never reuses their numbers', async () => {
    await using db = await sealedDatabase();
    await written(db, 5);
    await db.storage.write([{ type: 'del', key: auditKey(5) }, { type: 'del', key: auditKey(4) }]);
    await db.restart();
    expect(await (await db.verifier()).verify()).toMatchObject({ ok: false, firstBad: 4, reason: 'removed' });
    // A node started on the truncated log goes on after the saved head: the gap stays visible.
    const log = await db.open();
    expect(log.head.seq).toBe(5);
    await log.write(entries(6, 1));
    expect((await log.read()).map((r) => r.seq)).toEqual([1, 2, 3, 6]);
    expect(await (await db.verifier()).verify()).toMatchObject({ ok: false, firstBad: 4, reason: 'removed' });
  });

  it('detects a forged record appended without the key, plain or claiming the key', async () => {
    await using db = await sealedDatabase();
    const log = await written(db, 3);
    const [, , head] = await log.read();
    await putRaw(db.storage, 4, forgedAfter(head!));
    expect(await (await db.verifier()).verify()).toMatchObject({ ok: false, firstBad: 4, reason: 'altered', message: expect.stringMatching(/not keyed/) });
    await putRaw(db.storage, 4, forgedAfter(head!, { keyId: head!.keyId! }));
    expect(await (await db.verifier()).verify()).toMatchObject({ ok: false, firstBad: 4, reason: 'altered', message: expect.stringMatching(/keyed hash/) });
  });

  it('detects a record inserted and the chain re-hashed after it without the key', async () => {
    await using db = await sealedDatabase();
    const log = await written(db, 5);
    const records = await log.read();
    // Insert at 3, shift 3..5 to 4..6 and re-link everything after the insertion.
    const wrongKey = auditKeyOf(new Uint8Array(32).fill(7));
    const ops: StorageOp[] = [];
    let prev = records[1]!.hash;
    const rechained = [{ ...records[2]!, actor: 'intruder' }, ...records.slice(2)].map((r, i) => {
      const body = { ...r, seq: 3 + i, prev };
      const hash = macRecord(body, wrongKey);
      prev = hash;
      return { ...body, hash };
    });
    for (const r of rechained) ops.push({ type: 'put', key: auditKey(r.seq), value: encode(r) });
    await db.storage.write(ops);
    expect(await (await db.verifier()).verify()).toMatchObject({ ok: false, firstBad: 3, reason: 'altered' });
  });

  it('reports an unpadded key and never lets it rewind the sequence over genuine records', async () => {
    await using db = await sealedDatabase();
    const log = await written(db, 20);
    const genuine11 = await db.storage.get(auditKey(11));
    await db.storage.write([{ type: 'put', key: 'audit:1e1', value: (await db.storage.get(auditKey(10)))! }]);
    await db.restart();
    expect(await (await db.verifier()).verify()).toMatchObject({ ok: false, reason: 'stray-key', key: 'audit:1e1' });
    const next = await db.open();
    expect(next.head.seq).toBe(log.head.seq);
    await next.write(entries(21, 1));
    expect(await db.storage.get(auditKey(11))).toEqual(genuine11);
    expect((await next.read()).map((r) => r.seq)).toEqual(Array.from({ length: 21 }, (_, i) => i + 1));
    // The stray key is reported, never overwritten or removed.
    expect(await db.storage.get('audit:1e1')).toBeDefined();
    expect(await (await db.verifier()).verify()).toMatchObject({ ok: false, reason: 'stray-key', key: 'audit:1e1' });
  });

  it('is not fooled by a whole chain rewritten as plain sha256 records', async () => {
    await using db = await sealedDatabase();
    const log = await written(db, 4);
    let prev = GENESIS;
    for (const r of await log.read()) {
      const { keyId: _dropped, hash: _old, ...rest } = r;
      const body = { ...rest, prev };
      const hash = hashRecord(body);
      await putRaw(db.storage, r.seq, { ...body, hash });
      prev = hash;
    }
    expect(await (await db.verifier()).verify()).toMatchObject({ ok: false, firstBad: 4, reason: 'altered', message: expect.stringMatching(/chain was rewritten/) });
  });

  it('refuses to verify or to go on without the key, rather than pass or start a new one', async () => {
    await using db = await sealedDatabase();
    await written(db, 2);
    await rm(join(db.auditDir, 'key'));
    await expect(db.verifier()).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'AUDIT_KEY_MISSING') && /no audit key at .*key/.test(String(e)));
    await expect(db.open()).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'AUDIT_KEY_MISSING'));
    await expect(stat(join(db.auditDir, 'key'))).rejects.toThrow(/ENOENT/);
    // A log given no key at all must not append plain records after keyed ones either.
    await expect(createAuditLog(db.storage).open()).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'AUDIT_KEY_MISSING'));
  });

  it('refuses another database\'s key', async () => {
    await using db = await sealedDatabase();
    await written(db, 2);
    await writeFile(join(db.auditDir, 'key'), `${'ab'.repeat(32)}\n`);
    await expect(db.open()).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'AUDIT_KEY_MISMATCH'));
    expect(await (await db.verifier()).verify()).toMatchObject({ ok: false, firstBad: 1, reason: 'unverifiable' });
  });

  it.each([
    ['deleted', (path: string) => rm(path)],
    ['emptied', (path: string) => writeFile(path, '')],
    ['edited back to an older head', async (path: string) => writeFile(path, (await readFile(path, 'utf8')).replace(/^(\d+) /m, '1 '))],
  ])('reports saved heads %s as unverifiable', async (_label, tamper) => {
    await using db = await sealedDatabase();
    await written(db, 3);
    await tamper(join(db.auditDir, 'heads'));
    expect(await (await db.verifier()).verify()).toMatchObject({ ok: false, reason: 'unverifiable' });
  });

  it('replaces a key file a kill left empty before any record was keyed, and refuses one once records are', async () => {
    await using db = await sealedDatabase();
    // Killed after the key file was created, before its key was written: nothing is keyed yet.
    await mkdir(db.auditDir, { recursive: true });
    await writeFile(join(db.auditDir, 'key'), '');
    const log = await db.open();
    await log.write(entries(1, 2));
    expect(await (await db.verifier()).verify()).toMatchObject({ ok: true });
    // With keyed records the key is irreplaceable: a damaged one is refused, nothing written.
    await writeFile(join(db.auditDir, 'key'), '12');
    await expect(db.open()).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'AUDIT_KEY_MISSING'));
    expect(await readFile(join(db.auditDir, 'key'), 'utf8')).toBe('12');
  });

  it('keeps the heads file small by rewriting it down to its newest line', async () => {
    await using dir = await tempDir('troupe-audit-heads-');
    const seal = await openAuditSeal(dir.path, { create: true });
    for (let seq = 1; seq <= 460; seq++) {
      seal.heads.save({ seq, hash: createHash('sha256').update(String(seq)).digest('hex') });
      if (seq % 20 === 0) await seal.heads.flush();
    }
    await seal.heads.flush();
    expect((await stat(seal.heads.path)).size).toBeLessThan(HEADS_COMPACT_BYTES + 200);
    expect(await seal.heads.last()).toEqual({ state: 'ok', head: { seq: 460, hash: createHash('sha256').update('460').digest('hex') } });
  });

  it('starts keyed on a database with older plain records, and says how many are plain', async () => {
    await using db = await sealedDatabase();
    await (await openLog(db.storage)).write(entries(1, 2)); // before the audit directory existed
    const log = await db.open();
    await log.write(entries(3, 2));
    await log.flush();
    expect(await (await db.verifier()).verify()).toMatchObject({ ok: true, count: 4, keyed: 2, saved: { seq: 4 } });
  });
});

describe('troupe audit verify on a node\'s database', () => {
  // One database written by real nodes (two runs, three node starts, the last resuming
  // nothing), copied for each attack: what an attacker with write access to the database,
  // and none to the audit directory, can do to it.
  let template: { path: string } & AsyncDisposable;
  const templateDb = () => join(template.path, 'db');
  beforeAll(async () => {
    template = await tempDir('troupe-audit-cli-');
    const { createNode, scriptedModel } = await import('../index.js');
    const { pairScript, twoAgentCrew } = await import('./helpers/fixtures.js');
    for (const runId of ['r1', 'r2', undefined]) {
      await using storage = await levelStorage({ path: templateDb() });
      await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript }) }, crews: [twoAgentCrew()] });
      if (runId) await (await node.run(twoAgentCrew(), { input: 'x', runId })).result();
    }
  });
  afterAll(() => template?.[Symbol.asyncDispose]());

  async function copy() {
    const dir = await tempDir('troupe-audit-copy-');
    await cp(templateDb(), join(dir.path, 'db'), { recursive: true });
    await cp(`${templateDb()}.audit`, join(dir.path, 'db.audit'), { recursive: true });
    return { db: join(dir.path, 'db'), [Symbol.asyncDispose]: () => dir[Symbol.asyncDispose]() };
  }

  async function verifyCli(db: string, ...extra: string[]) {
    const { runTroupe } = await import('./helpers/cli.js');
    return runTroupe(['audit', 'verify', '--db', db, ...extra]);
  }

  /** Edits a msgpack value in place, as someone with the database but not the key would. */
  async function edit(storage: Storage, key: string, change: (value: Record<string, unknown>) => Record<string, unknown>) {
    const value = decode((await storage.get(key))!, Infinity) as Record<string, unknown>;
    await storage.write([{ type: 'put', key, value: encode(change(value)) }]);
  }

  async function lastKey(storage: Storage, prefix: string) {
    for await (const [key] of storage.entries({ gte: prefix, lt: `${prefix}\uffff`, reverse: true, limit: 1 })) return key;
    throw new Error(`no ${prefix} key`);
  }

  async function firstKey(storage: Storage, prefix: string, where: (value: Record<string, unknown>) => boolean = () => true) {
    for await (const [key, value] of storage.entries({ gte: prefix, lt: `${prefix}\uffff` })) if (where(decode(value, Infinity) as Record<string, unknown>)) return key;
    throw new Error(`no ${prefix} key`);
  }

  it('passes the untampered log, every record keyed, every head saved, committed values unchanged', async () => {
    await using db = await copy();
    const intact = await verifyCli(db.db);
    expect(intact.code, intact.stderr).toBe(0);
    expect(intact.stdout).toMatch(/^audit log intact: \d+ records/);
    expect(intact.stdout).toMatch(/covers every record/);
    expect(intact.stdout).not.toMatch(/plain sha256|not keyed/);
    await using storage = await levelStorage({ path: db.db });
    const verdict = await createAuditLog(storage, { seal: await openAuditSeal(`${db.db}.audit`, { create: false }) }).verify();
    expect(verdict).toMatchObject({ ok: true, state: { superseded: 0 } });
    if (!verdict.ok) return;
    expect(verdict.keyed).toBe(verdict.count);
    expect(verdict.state.checked).toBeGreaterThan(4);
  });

  const attacks: [string, (storage: Storage) => Promise<void>, RegExp][] = [
    ['the newest record deleted', async (storage) => {
      const { seq } = await storedAuditHead(storage);
      await storage.write([{ type: 'del', key: auditKey(seq) }]);
    }, /\(removed\)/],
    ['a forged record appended', async (storage) => {
      const { seq } = await storedAuditHead(storage);
      await putRaw(storage, seq + 1, forgedAfter(await raw(storage, seq)));
    }, /\(altered\).*not keyed/],
    ['a record inserted and the rest re-chained', async (storage) => {
      const { seq: last } = await storedAuditHead(storage);
      const wrongKey = auditKeyOf(new Uint8Array(32).fill(9));
      const records = await Promise.all(Array.from({ length: last - 2 }, (_, i) => raw(storage, i + 3)));
      let prev = (await raw(storage, 2)).hash;
      const ops: StorageOp[] = [];
      for (const [i, r] of [{ ...records[0]!, actor: 'intruder' }, ...records].entries()) {
        const body = { ...r, seq: 3 + i, prev };
        prev = macRecord(body, wrongKey);
        ops.push({ type: 'put', key: auditKey(body.seq), value: encode({ ...body, hash: prev }) });
      }
      await storage.write(ops);
    }, /first bad record 3 \(altered\)/],
    ['a record planted under an unpadded key', async (storage) => {
      await storage.write([{ type: 'put', key: 'audit:1e1', value: (await storage.get(auditKey(10)))! }]);
    }, /\(stray-key\).*"audit:1e1"/],
    ['a finished run\'s output edited', (storage) => edit(storage, 'run:r1', (run) => ({ ...run, output: 'something else' })), /\(state-altered\).*"run:r1"/],
    ['a recorded tool result edited', async (storage) => {
      const key = await firstKey(storage, 'ledger:r2:', (entry) => entry.status === 'done' && entry.kind === 'tool');
      await edit(storage, key, (entry) => ({ ...entry, result: 'forged result' }));
    }, /\(state-altered\).*"ledger:r2:/],
    ['a checkpoint manifest edited', async (storage) => {
      const key = await firstKey(storage, 'ckpt:r1:');
      await edit(storage, key, (manifest) => ({ ...manifest, ts: 0 }));
    }, /\(state-altered\).*"ckpt:r1:/],
    ['an actor record of the final checkpoint edited', async (storage) => {
      // The newest: its batch ends the run, and has audited facts (a batch without any has no record to commit to it).
      const key = await lastKey(storage, 'actor:r1:');
      await edit(storage, key, (record) => ({ ...record, forged: true }));
    }, /\(state-altered\).*"actor:r1:/],
    ['a journal entry edited', async (storage) => {
      const key = await firstKey(storage, 'jrnl:r1:');
      await edit(storage, key, (entry) => ({ ...entry, actor: 'someone else' }));
    }, /\(state-altered\).*"jrnl:r1:/],
  ];

  it.each(attacks)('fails on %s', async (_label, attack, reason) => {
    await using db = await copy();
    {
      await using storage = await levelStorage({ path: db.db });
      await attack(storage);
    }
    const result = await verifyCli(db.db);
    expect(result.code, result.stdout + result.stderr).toBe(1);
    expect(result.stdout).toMatch(/^audit log TAMPERED: first bad record \d+ /);
    expect(result.stdout).toMatch(reason);
  });

  it('fails with AUDIT_KEY_MISSING when the audit directory is not found', async () => {
    await using db = await copy();
    await using elsewhere = await tempDir('troupe-audit-none-');
    const result = await verifyCli(db.db, '--audit-dir', elsewhere.path);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/\[AUDIT_KEY_MISSING\] no audit key at/);
    expect(result.stdout).not.toMatch(/intact/);
  });
});
