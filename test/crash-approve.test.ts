import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HistoryEntry } from '../core/history.js';
import { createRunStore } from '../core/run-store.js';
import { levelStorage } from '../storage/level.js';
import { CONFIRMED_OUTPUT, readEffects, UNCONFIRMED_OUTPUT, type Effect } from '../examples/order-crew.js';
import { runTroupe, spawnTroupe } from './helpers/cli.js';
import { tempDir } from './helpers/temp.js';

/**
 * SIGKILL during each command of a run's life, not only `run`: real processes, real LevelDB,
 * the order crew's world file. Every kill is synchronised on what the child prints (a tool
 * announcing its start or its effect, an event line), never on a delay: the crew's tools
 * that are told to hang (TROUPE_SLOW_TOOL, TROUPE_HANG_AFTER_EFFECT) wait for the process to
 * stop, so the kill lands while they run.
 */
const EXAMPLE = 'examples/order-crew.ts';
const EMAIL_CALL = 'cashier/t1/s2/tool/call_1_0';
/** Each test runs four to six CLI processes (about a second each, more on a loaded machine). */
const TIMEOUT = 120_000;

async function setup() {
  const db = await tempDir();
  const world = await tempDir();
  const env = { TROUPE_WORLD: world.path, TROUPE_SCRIPTED_LATENCY_MS: '0', TROUPE_TOOL_LATENCY_MS: '0' };
  const effects = (kind: Effect['kind']) => readEffects(world.path).filter((e) => e.kind === kind);
  /** Read straight from the database (every child has exited): faster than a CLI process. */
  const approvals = async () => {
    await using storage = await levelStorage({ path: db.path });
    return await createRunStore(storage).listApprovals();
  };
  const journal = async (runId: string) => {
    await using storage = await levelStorage({ path: db.path });
    return await createRunStore(storage).journal(runId);
  };
  const pending = async (runId: string) => (await approvals()).filter((a) => a.runId === runId && a.status === 'pending');
  /** Starts `troupe ...args`, waits for a line matching `at`, SIGKILLs it and waits for its exit. */
  const killAt = async (args: string[], at: RegExp, extra: Record<string, string> = {}) => {
    const proc = spawnTroupe([...args, '--db', db.path], { ...env, ...extra });
    await proc.waitFor(at);
    proc.child.kill('SIGKILL');
    expect((await proc.exit).signal).toBe('SIGKILL');
    return proc;
  };
  const troupe = (args: string[], extra: Record<string, string> = {}) => runTroupe([...args, '--db', db.path], { ...env, ...extra });
  /** Kills a run inside `tool` (before its effect), then resumes it: an irreversible call is parked. */
  const crashIn = (runId: string, tool: string) => killAt(['run', EXAMPLE, '--run-id', runId], new RegExp(`^slow tool ${tool} started$`), { TROUPE_SLOW_TOOL: tool });
  const park = async (runId: string) => {
    await crashIn(runId, 'send_confirmation');
    const parked = await troupe(['resume', runId]);
    expect(parked.code).toBe(3);
    const [approval, ...more] = await pending(runId);
    expect(more).toEqual([]);
    expect(approval).toMatchObject({ callId: EMAIL_CALL, tool: 'send_confirmation', reason: 'outcome-unknown' });
    return approval!;
  };
  return {
    db: db.path,
    world: world.path,
    env,
    effects,
    approvals,
    journal,
    pending,
    killAt,
    troupe,
    crashIn,
    park,
    async [Symbol.asyncDispose]() {
      await db[Symbol.asyncDispose]();
      await world[Symbol.asyncDispose]();
    },
  };
}

describe('SIGKILL during approve: the approved call is parked again, never re-run blindly', () => {
  it.each([
    ['after its effect (the e-mail went out, the ledger has no result)', 'TROUPE_HANG_AFTER_EFFECT', /^tool send_confirmation effect recorded$/, 1],
    ['before its effect', 'TROUPE_SLOW_TOOL', /^slow tool send_confirmation started$/, 0],
  ] as const)('killed while the approved call runs, %s', async (_when, hook, at, sent) => {
    await using t = await setup();
    const first = await t.park('a1');
    expect(t.effects('email')).toHaveLength(0);

    // The human lets it run; the process dies while the tool runs.
    await t.killAt(['approve', first.id], at, { [hook]: 'send_confirmation' });
    expect(t.effects('email')).toHaveLength(sent);

    // Outcome unknown again: resume must park it again, not send it again.
    const resumed = await t.troupe(['resume', 'a1']);
    expect({ code: resumed.code, emails: t.effects('email').length }, `resume after a kill inside an approved call:\n${resumed.stdout}`).toEqual({ code: 3, emails: sent });
    const listed = (JSON.parse((await t.troupe(['approvals', '--json'])).stdout) as { approvals: Array<{ id: string; runId: string; callId: string; tool: string; reason: string }> }).approvals;
    const [again, ...more] = listed;
    expect(more).toEqual([]);
    expect(again).toMatchObject({ runId: 'a1', callId: EMAIL_CALL, tool: 'send_confirmation', reason: 'outcome-unknown' });
    expect(again!.id).not.toBe(first.id);

    // The human looks at the world: confirm what happened, or let it run.
    const decided = await t.troupe(sent ? ['approve', again!.id, '--result', '{"sent":true,"to":"ada@example.com"}'] : ['approve', again!.id]);
    expect(decided.code).toBe(0);
    expect(decided.stdout).toContain(CONFIRMED_OUTPUT);
    expect(t.effects('email')).toHaveLength(1);
    expect((await t.approvals()).map((a) => [a.id, a.status])).toEqual(expect.arrayContaining([[first.id, 'approved'], [again!.id, 'approved']]));
  }, TIMEOUT);
});

describe('SIGKILL during reject: the decision is durable or not, either way nothing is sent', () => {
  it.each([
    ['as the decision is taken', /"type":"approval\.decided"/],
    ['while the model answers the rejection', /"type":"state","runId":"r1","actor":"cashier","state":"planning"/],
  ])('killed %s', async (_when, at) => {
    await using t = await setup();
    const approval = await t.park('r1');
    // A slow model keeps the command alive after the decision, so the kill lands inside it.
    await t.killAt(['reject', approval.id, '--reason', 'customer cancelled', '--json'], at, { TROUPE_SCRIPTED_LATENCY_MS: '60000' });
    const status = (await t.approvals()).find((a) => a.id === approval.id)!.status;
    expect(['pending', 'rejected']).toContain(status);
    // Lost with the process: the human decides again; durable: the run just continues.
    const finished = await t.troupe(status === 'pending' ? ['reject', approval.id, '--reason', 'customer cancelled'] : ['resume', 'r1']);
    expect(finished.code).toBe(0);
    // The model was told it was not executed, and says so.
    expect(finished.stdout).toContain(UNCONFIRMED_OUTPUT);
    expect(t.effects('email')).toHaveLength(0);
    expect(await t.pending('r1')).toEqual([]);
    expect((await t.journal('r1')).filter((e) => e.kind === 'approval.decided')).toHaveLength(1);
  }, TIMEOUT);
});

describe('SIGKILL during fork: a fork replays the work before its checkpoint and never redoes it', () => {
  // One finished source run for both forks; each fork gets its own id and effects keys.
  let t: Awaited<ReturnType<typeof setup>>;
  let history: HistoryEntry[];
  beforeAll(async () => {
    t = await setup();
    expect((await t.troupe(['run', EXAMPLE, '--run-id', 'f1'])).code).toBe(0);
    history = (JSON.parse((await t.troupe(['history', 'f1', '--json'])).stdout) as { history: HistoryEntry[] }).history;
  }, TIMEOUT);
  afterAll(() => t?.[Symbol.asyncDispose]());
  const keys = (kind: Effect['kind'], prefix: string) => t.effects(kind).map((e) => e.key).filter((k) => k.startsWith(prefix)).sort();

  it('killed inside the fork’s own irreversible call: the fork parks it, its e-mail is its own', async () => {
    // After the clerk's work, before the cashier's: the reservation is replayed, payment and e-mail are the fork's own calls.
    const at = history.find((h) => h.states.clerk === 'done' && h.states.cashier === 'planning')!.seq;
    await t.killAt(['fork', 'f1', '--at', String(at), '--run-id', 'f1-a'], /^slow tool send_confirmation started$/, { TROUPE_SLOW_TOOL: 'send_confirmation' });

    const resumed = await t.troupe(['resume', 'f1-a']);
    expect(resumed.code).toBe(3);
    const [approval] = await t.pending('f1-a');
    expect(approval).toMatchObject({ tool: 'send_confirmation', callId: EMAIL_CALL });
    expect(keys('email', 'f1-a:')).toEqual([]);
    const approved = await t.troupe(['approve', approval!.id]);
    expect(approved.code).toBe(0);
    expect(approved.stdout).toContain(CONFIRMED_OUTPUT);

    // Per idempotency key: the source's effects once, the fork's new calls once, nothing of the clerk's redone.
    expect(keys('reserve', 'f1')).toEqual(['f1:clerk/t1/s2/tool/call_1_0']);
    expect(keys('hold', 'f1')).toEqual(['f1-a:cashier/t1/s1/tool/call_0_0', 'f1:cashier/t1/s1/tool/call_0_0']);
    expect(keys('email', 'f1')).toEqual([`f1-a:${EMAIL_CALL}`, `f1:${EMAIL_CALL}`]);
  }, TIMEOUT);

  it('killed while the fork replays: resumed, it finishes without touching the world', async () => {
    const before = readEffects(t.world);
    // After the e-mail's result: only the cashier's last model turn is left to make.
    const at = history.filter((h) => h.states.cashier === 'planning').at(-1)!.seq;
    // The fork is durable once it prints its id; the slow model keeps it busy until the kill.
    await t.killAt(['fork', 'f1', '--at', String(at), '--run-id', 'f1-b'], /^run f1-b$/, { TROUPE_SCRIPTED_LATENCY_MS: '60000' });
    const resumed = await t.troupe(['resume', 'f1-b']);
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toContain(CONFIRMED_OUTPUT);
    expect(readEffects(t.world)).toEqual(before);
  }, TIMEOUT);
});

describe('SIGKILL during resume', () => {
  it('killed right after parking the call: one approval, and the human’s answer sends one e-mail', async () => {
    await using t = await setup();
    await t.crashIn('p1', 'send_confirmation');
    // `approval.requested` is announced once the approval is durable.
    await t.killAt(['resume', 'p1', '--json'], /"type":"approval\.requested"/);
    const [approval, ...more] = await t.pending('p1');
    expect(more).toEqual([]);
    expect(t.effects('email')).toHaveLength(0);
    const approved = await t.troupe(['approve', approval!.id]);
    expect(approved.code).toBe(0);
    expect(approved.stdout).toContain(CONFIRMED_OUTPUT);
    expect(t.effects('email')).toHaveLength(1);
  }, TIMEOUT);

  it.each([
    ['an idempotent call', 'reserve_stock', 'reserve'],
    ['a compensatable call', 'hold_payment', 'hold'],
  ] as const)('killed inside %s after its effect: resumed again, the effect stands once', async (_what, tool, kind) => {
    await using t = await setup();
    await t.crashIn('p2', tool);
    await t.killAt(['resume', 'p2'], new RegExp(`^tool ${tool} effect recorded$`), { TROUPE_HANG_AFTER_EFFECT: tool });
    expect(t.effects(kind)).toHaveLength(1);
    const resumed = await t.troupe(['resume', 'p2']);
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toContain(CONFIRMED_OUTPUT);
    const effects = readEffects(t.world);
    const [key] = new Set(effects.filter((e) => e.kind === kind).map((e) => e.key));
    const open = effects.filter((e) => e.key === key && e.kind === kind).length - effects.filter((e) => e.key === key && e.kind === 'release').length;
    // Re-run with the same key: deduplicated (reserve), or compensated first, then held again (hold).
    expect(open).toBe(1);
    expect(t.effects('email')).toHaveLength(1);
  }, TIMEOUT);
});

describe('a fork from where an approved call was in flight', () => {
  it('parks the call for a human, even after the source was approved again and sent the e-mail', async () => {
    await using t = await setup();
    const first = await t.park('s1');
    // Approved, and killed inside the approved call before its effect: its intent is under the first approval.
    await t.killAt(['approve', first.id], /^slow tool send_confirmation started$/, { TROUPE_SLOW_TOOL: 'send_confirmation' });
    expect((await t.troupe(['resume', 's1'])).code).toBe(3);
    const [second] = await t.pending('s1');
    expect(second).toMatchObject({ callId: EMAIL_CALL, reason: 'outcome-unknown' });
    // The checkpoints where the call ran under the first approval: after its decision, before it was asked again.
    const history = (JSON.parse((await t.troupe(['history', 's1', '--json'])).stdout) as { history: HistoryEntry[] }).history;
    const asked = history.findLastIndex((h) => h.states.cashier === 'awaitingApproval');
    const inFlight = history.slice(0, asked).filter((h, i, all) => h.states.cashier === 'acting' && all.slice(0, i).some((p) => p.states.cashier === 'awaitingApproval'));
    expect(inFlight.length).toBeGreaterThan(0);
    // The source is approved again and sends its e-mail (under the second approval) and ends.
    const approved = await t.troupe(['approve', second!.id]);
    expect(approved.code).toBe(0);
    expect(t.effects('email').map((e) => e.key)).toEqual([`s1:${EMAIL_CALL}`]);
    for (const [n, h] of inFlight.entries()) {
      const fork = `s1-f${n}`;
      // The fork must not take the first approval, in its snapshot, for one not yet used.
      expect((await t.troupe(['fork', 's1', '--at', String(h.seq), '--run-id', fork])).code).toBe(3);
      expect(await t.pending(fork)).toMatchObject([{ callId: EMAIL_CALL, tool: 'send_confirmation', reason: 'outcome-unknown' }]);
      expect(t.effects('email')).toHaveLength(1);
    }
  }, TIMEOUT);
});
