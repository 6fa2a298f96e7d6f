import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, memoryStorage, scriptedModel, staticSecrets, tool, type ModelRequest, type Policy, type RunEvent } from '../index.js';
import { createAuditLog } from '../core/audit-log.js';
import { createRunStore } from '../core/run-store.js';
import { levelStorage } from '../storage/level.js';
import type { Script, ScriptedTurn } from '../models/scripted.js';
import { fsTools } from '../tools/index.js';
import { grepDirectory } from './helpers/grep-dir.js';
import { runTroupe } from './helpers/cli.js';
import { tempDir } from './helpers/temp.js';

const runs: string[] = [];
const writeTool = tool({
  name: 'write_note',
  description: 'writes a note',
  input: z.object({ text: z.string() }),
  effect: 'idempotent',
  scopes: ['fs:write'],
  run: ({ text }) => (runs.push(text), 'written'),
});
const readTool = tool({ name: 'read_note', description: 'reads', input: z.object({}), effect: 'read', scopes: ['fs:read'], run: () => 'the note' });

/** One agent that calls `toolName` once, then reports what the tool said. */
const caller = (toolName: string, args: unknown = {}) => (req: ModelRequest): ScriptedTurn => {
  const last = req.messages.at(-1)!;
  return last.role === 'tool' ? `saw: ${last.content}` : { toolCalls: [{ name: toolName, args }] };
};

async function runOne(script: Script, options: { agentPolicy?: Policy; crewPolicy?: Policy } = {}) {
  await using storage = memoryStorage();
  await using node = await createNode({ storage, models: { scripted: scriptedModel({ script }) } });
  const a = agent({ id: 'clerk', role: 'r', instructions: 'i', model: 'scripted', tools: [writeTool, readTool], ...(options.agentPolicy ? { policy: options.agentPolicy } : {}) });
  const run = await node.run(crew({ id: 'sec', agents: [a], ...(options.crewPolicy ? { policy: options.crewPolicy } : {}) }), { input: 'go', runId: 'sec1' });
  const result = await run.settled();
  const audit = await node.audit.read({ runId: 'sec1' });
  return { result, audit };
}

describe('tool permissions', () => {
  it('refuses a denied tool with a clear message to the model, never runs it, and audits the decision', async () => {
    runs.length = 0;
    const { result, audit } = await runOne(caller('write_note', { text: 'x' }), { agentPolicy: { allow: ['fs:read'], deny: ['fs:write'] } });
    expect(result.output).toMatch(/^saw: error: not permitted: .*fs:write/);
    expect(runs).toEqual([]);
    expect(audit.find((r) => r.kind === 'permission')).toMatchObject({ actor: 'clerk', data: { tool: 'write_note', decision: 'deny', scope: 'fs:write' } });
  });

  it('denies scopes no rule covers (default deny) and allows covered ones, wildcards included', async () => {
    const denied = await runOne(caller('read_note'), { agentPolicy: { allow: ['net'] } });
    expect(denied.result.output).toMatch(/^saw: error: not permitted/);
    const allowed = await runOne(caller('read_note'), { agentPolicy: { allow: ['fs:*'] } });
    expect(allowed.result.output).toBe('saw: the note');
  });

  it('lets a crew narrow an agent, never widen it', async () => {
    runs.length = 0;
    const { result } = await runOne(caller('write_note', { text: 'x' }), { agentPolicy: { allow: ['fs:*'] }, crewPolicy: { allow: ['fs:read'] } });
    expect(result.output).toMatch(/^saw: error: not permitted/);
    expect(runs).toEqual([]);
  });

  it('puts an `ask` call in awaitingApproval, durably: approved after a restart, it runs once', async () => {
    runs.length = 0;
    await using storage = memoryStorage();
    const policy = { allow: ['fs:read'], ask: ['fs:write'] };
    const def = crew({ id: 'ask', agents: [agent({ id: 'clerk', role: 'r', instructions: 'i', model: 'scripted', tools: [writeTool], policy })] });
    const models = { scripted: scriptedModel({ script: caller('write_note', { text: 'hello' }) }) };
    {
      await using node = await createNode({ storage, models });
      const asked = new Promise<RunEvent>((resolve) => node.subscribe((e) => e.type === 'approval.requested' && resolve(e)));
      await node.run(def, { input: 'go', runId: 'ask1' });
      expect(await asked).toMatchObject({ reason: 'policy', tool: 'write_note' });
    }
    await using node = await createNode({ storage, models, crews: [def] });
    const [approval] = await node.approvals({ status: 'pending' });
    expect(approval).toMatchObject({ reason: 'policy', args: { text: 'hello' } });
    expect(runs).toEqual([]);
    await node.approve(approval!.id);
    expect((await node.get('ask1')!.result()).output).toBe('saw: written');
    expect(runs).toEqual(['hello']);
    const kinds = (await node.audit.read({ runId: 'ask1' })).map((r) => r.kind);
    expect(kinds).toEqual(expect.arrayContaining(['permission', 'approval.requested', 'approval.decided', 'tool.call']));
  });

  it('a handoff passes on at most the permissions of the handing agent', async () => {
    runs.length = 0;
    await using storage = memoryStorage();
    const script: Script = (req) => {
      if (req.agent === 'triage') return { toolCalls: [{ name: 'handoff', args: { to: 'writer', context: 'please write' } }] };
      return caller('write_note', { text: 'x' })(req);
    };
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script }) } });
    const def = crew({
      id: 'ho',
      process: { type: 'handoff', entry: 'triage' },
      agents: [
        agent({ id: 'triage', role: 'r', instructions: 'i', model: 'scripted', policy: { allow: ['fs:read'] } }),
        agent({ id: 'writer', role: 'w', instructions: 'i', model: 'scripted', tools: [writeTool], policy: { allow: ['fs:*'] } }),
      ],
    });
    const result = await (await node.run(def, { input: 'go', runId: 'ho1' })).result();
    expect(result.output).toMatch(/^saw: error: not permitted/);
    expect(runs).toEqual([]);
  });
});

describe('secrets', () => {
  it('resolves secrets by name at call time and never writes them to disk', async () => {
    await using dir = await tempDir();
    const secret = `sk-${randomBytes(18).toString('hex')}`;
    const control = `ctl-${randomBytes(18).toString('hex')}`;
    const seen: string[] = [];
    const api = tool({
      name: 'call_api',
      description: 'calls an API with a token',
      input: z.object({}),
      effect: 'read',
      secrets: ['API_TOKEN'],
      run: (_args, ctx) => {
        seen.push(ctx.secrets.API_TOKEN!);
        // A careless tool echoes the token; the runtime must scrub it.
        return `used token ${ctx.secrets.API_TOKEN} for ${control}`;
      },
    });
    {
      await using storage = await levelStorage({ path: dir.path });
      await using node = await createNode({ storage, secrets: staticSecrets({ API_TOKEN: secret }), models: { scripted: scriptedModel({ script: caller('call_api') }) } });
      const def = crew({ id: 'sec', agents: [agent({ id: 'clerk', role: 'r', instructions: 'i', model: 'scripted', tools: [api] })] });
      const result = await (await node.run(def, { input: 'go', runId: 'sec2' })).result();
      expect(result.output).toBe(`saw: used token [redacted] for ${control}`);
    }
    expect(seen).toEqual([secret]);
    expect(await grepDirectory(dir.path, control)).not.toEqual([]); // the control value did reach disk
    expect(await grepDirectory(dir.path, secret)).toEqual([]);
  });
});

describe('audit log', () => {
  it('`troupe audit` prints a run, exports JSONL, and `verify` names the first altered or removed record', async () => {
    await using db = await tempDir();
    await runTroupe(['run', 'examples/support-handoff.ts', '--db', db.path, '--run-id', 'a1'], { TROUPE_SCRIPTED_LATENCY_MS: '0' });
    const printed = await runTroupe(['audit', 'a1', '--db', db.path]);
    expect(printed.stdout).toMatch(/^\s+1 {2}\S+ {2}run\.started/);
    expect(printed.stdout).toMatch(/model\.call\s+billing/);
    const jsonl = await runTroupe(['audit', 'a1', '--db', db.path, '--json']);
    const records = jsonl.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(records.length).toBeGreaterThan(8);
    expect(records.every((r: { prev: string; hash: string }, i: number) => i === 0 || r.prev === records[i - 1].hash)).toBe(true);
    expect((await runTroupe(['audit', 'verify', '--db', db.path])).code).toBe(0);

    // Alter one record in place: verification must fail at exactly that record.
    {
      await using storage = await levelStorage({ path: db.path });
      const audit = createAuditLog(storage);
      const [fifth] = await audit.read({ after: 4 });
      const { encode } = await import('../core/codec.js');
      await storage.write([{ type: 'put', key: `audit:${String(fifth!.seq).padStart(12, '0')}`, value: encode({ ...fifth, data: { ...fifth!.data, tool: 'forged' } }) }]);
    }
    const altered = await runTroupe(['audit', 'verify', '--db', db.path]);
    expect(altered.code).toBe(1);
    expect(altered.stdout).toMatch(/TAMPERED: first bad record 5 \(altered\)/);

    await using dbRemoved = await tempDir();
    await runTroupe(['run', 'examples/support-handoff.ts', '--db', dbRemoved.path, '--run-id', 'a2'], { TROUPE_SCRIPTED_LATENCY_MS: '0' });
    {
      await using storage = await levelStorage({ path: dbRemoved.path });
      await storage.write([{ type: 'del', key: `audit:${'3'.padStart(12, '0')}` }]);
    }
    const removed = await runTroupe(['audit', 'verify', '--db', dbRemoved.path]);
    expect(removed.code).toBe(1);
    expect(removed.stdout).toMatch(/first bad record [34] \((removed|broken-chain)\)/);
  });
});

describe('built-in fs tools', () => {
  it('are confined to their root: a traversal attempt is refused, reported to the model and audited', async () => {
    await using root = await tempDir();
    await mkdir(join(root.path, 'docs'));
    await writeFile(join(root.path, 'docs', 'a.txt'), 'inside');
    const script: Script = (req) => {
      const answered = req.messages.filter((m) => m.role === 'assistant').length;
      const last = req.messages.at(-1)!;
      if (answered === 0) return { toolCalls: [{ name: 'read_file', args: { path: '../../etc/passwd' } }] };
      if (answered === 1) return { text: last.content, toolCalls: [{ name: 'read_file', args: { path: 'docs/a.txt' } }] };
      return `last: ${last.content}`;
    };
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script }) } });
    const def = crew({ id: 'fs', agents: [agent({ id: 'reader', role: 'r', instructions: 'i', model: 'scripted', tools: fsTools({ root: root.path, readOnly: true }) })] });
    const result = await (await node.run(def, { input: 'go', runId: 'fs1' })).result();
    expect(result.output).toMatch(/inside/);
    const journal = await createRunStore(storage).journal('fs1');
    const calls = journal.filter((e) => e.kind === 'tool.call').map((e) => e.data);
    expect(calls[0]).toMatchObject({ tool: 'read_file', ok: false, refused: 'path-outside-root' });
    expect(calls[1]).toMatchObject({ tool: 'read_file', ok: true });
    const audited = (await node.audit.read({ runId: 'fs1' })).filter((r) => r.kind === 'tool.call');
    expect(audited[0]!.data).toMatchObject({ refused: 'path-outside-root' });
  });
});
