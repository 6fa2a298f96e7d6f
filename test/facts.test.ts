import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, memoryStorage, scriptedModel, tool, type RunEvent } from '../index.js';
import { createAuditLog, toJsonValue } from '../core/audit-log.js';
import { eventOfJournal, isAuditable } from '../core/facts.js';
import { createRunStore, type JournalEntry, type JournalKind } from '../core/run-store.js';

/**
 * The journal, the live event stream and the audit log describe one set of facts
 * (core/facts.ts): each journal entry is announced once live (tagged with its `journalSeq`),
 * and the audit log is the projection `isAuditable` of the journal, written in the same
 * batch. Checked over a run that produces every kind of fact, across a stop and a resume.
 */

const lookup = tool({ name: 'lookup', description: 'Looks a word up.', input: z.object({ word: z.string() }), effect: 'read', scopes: ['kb:read'], run: ({ word }) => `${word}: a definition` });
const wipe = tool({ name: 'wipe', description: 'Deletes files.', input: z.object({}), effect: 'irreversible', scopes: ['fs:write'], run: () => 'wiped' });
const pay = tool({ name: 'pay', description: 'Pays.', input: z.object({ amount: z.number() }), effect: 'irreversible', scopes: ['money:send'], run: ({ amount }) => `paid ${amount}` });

const factsCrew = () =>
  crew({
    id: 'facts',
    supervision: { maxRestarts: 0 },
    agents: [
      agent({
        id: 'researcher',
        role: 'researches',
        instructions: 'Research.',
        model: 'scripted',
        tools: [lookup, wipe, pay],
        // allow, deny and ask: one permission fact of each decision.
        policy: { allow: ['kb:*'], ask: ['money:*'], deny: ['fs:*'] },
        retry: { initialDelayMs: 1, jitter: 0 },
      }),
      agent({ id: 'writer', role: 'writes', instructions: 'Write.', model: 'scripted', retry: { initialDelayMs: 1, jitter: 0 } }),
    ],
  });

const script = {
  researcher: [
    // The first attempt fails (model.error), the retry answers (model.call).
    { text: 'looking up', toolCalls: [{ name: 'lookup', args: { word: 'actor' } }], failFirst: 1 },
    { text: 'cleaning up', toolCalls: [{ name: 'wipe', args: {} }] },
    { text: 'paying', toolCalls: [{ name: 'pay', args: { amount: 3 } }] },
    'findings: actor',
  ],
  writer: ['final: a brief about actors'],
};

const RUN = 'facts-1';
const ofRun = (events: RunEvent[]) => events.filter((e) => 'runId' in e && e.runId === RUN);

describe('facts', () => {
  it('every persisted fact appears once in the journal and once in the event stream, and in the audit log exactly when it is auditable', async () => {
    await using storage = memoryStorage();
    const live: RunEvent[] = [];

    // First node: runs until the payment waits for a human, then stops.
    let approvalId: string;
    {
      await using node = await createNode({ storage, models: { scripted: scriptedModel({ script }) } });
      node.subscribe((e) => live.push(e));
      const asked = new Promise<string>((resolve) => node.subscribe((e) => e.type === 'approval.requested' && resolve(e.approvalId)));
      await node.run(factsCrew(), { input: 'brief me', runId: RUN });
      approvalId = await asked;
    }

    // Second node: resumes the run (run.resumed), approves, and the run completes.
    {
      await using node = await createNode({ storage, resume: false, models: { scripted: scriptedModel({ script }) } });
      node.subscribe((e) => live.push(e));
      const run = await node.resume(RUN, factsCrew());
      await node.approve(approvalId);
      expect((await run.result()).output).toBe('final: a brief about actors');
    }

    const journal = await createRunStore(storage).journal(RUN);
    const kinds = new Set(journal.map((e) => e.kind));
    const every: JournalKind[] = ['run.started', 'run.resumed', 'run.completed', 'state', 'message', 'model.call', 'model.error', 'tool.call', 'permission', 'approval.requested', 'approval.decided'];
    expect([...kinds].sort()).toEqual(every.sort());
    expect(new Set(journal.filter((e) => e.kind === 'permission').map((e) => e.data.decision))).toEqual(new Set(['allow', 'deny', 'ask']));
    expect(journal.map((e) => e.seq)).toEqual(journal.map((_, i) => i + 1));

    // Journal ⇄ live events: one event per entry, the one core/facts.ts translates it to.
    const tagged = ofRun(live).filter((e) => e.journalSeq !== undefined);
    const bySeq = new Map<number, RunEvent[]>();
    for (const event of tagged) bySeq.set(event.journalSeq!, [...(bySeq.get(event.journalSeq!) ?? []), event]);
    for (const entry of journal) {
      const events = bySeq.get(entry.seq) ?? [];
      expect(events, `journal entry ${entry.seq} (${entry.kind}) was announced ${events.length} times`).toHaveLength(1);
      expect(events[0]).toEqual(eventOfJournal(RUN, 'facts', entry));
    }
    const journaled = new Set(journal.map((e) => e.seq));
    for (const event of tagged) expect(journaled.has(event.journalSeq!), `live ${event.type} #${event.journalSeq} has no journal entry`).toBe(true);

    // Journal → audit log: exactly the auditable entries, in order, with the same data.
    const audit = await createAuditLog(storage).read({ runId: RUN });
    const auditable = journal.filter((e: JournalEntry) => isAuditable(e.kind));
    expect(auditable.length).toBeLessThan(journal.length);
    expect(audit.map((r) => ({ kind: r.kind, actor: r.actor, ts: r.ts, data: r.data }))).toEqual(
      auditable.map((e) => ({ kind: e.kind, actor: e.actor, ts: e.ts, data: toJsonValue(e.data) })),
    );
    expect(audit.map((r) => r.seq)).toEqual([...audit.map((r) => r.seq)].sort((a, b) => a - b));
    expect(await createAuditLog(storage).verify()).toMatchObject({ ok: true });
  });
});
