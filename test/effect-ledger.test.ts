import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, memoryStorage, scriptedModel, tool, type RunEvent, type Storage, type ToolEffect } from '../index.js';
import { decode } from '../core/codec.js';
import { claimKey } from '../core/storage.js';

/**
 * A one-agent crew whose tool hangs on its first call, as if the process died mid-call: the
 * first node is abandoned (never closed) and a second node on the same storage resumes.
 */
function ledgerFixture(effect: ToolEffect) {
  const log: string[] = [];
  let hang = true;
  // The tool only starts once its intent is durable: its start is the moment to "crash".
  let started!: () => void;
  const toolStarted = new Promise<void>((resolve) => (started = resolve));
  const charge = tool({
    name: 'charge',
    description: 'Charges a card.',
    input: z.object({ cents: z.number().int() }),
    effect,
    run: ({ cents }, ctx) => {
      log.push(`run ${cents} key=${ctx.idempotencyKey}`);
      if (hang) {
        started();
        return new Promise<never>(() => {});
      }
      return { charged: cents };
    },
    ...(effect === 'compensatable' ? { compensate: ({ cents }: { cents: number }) => void log.push(`compensate ${cents}`) } : {}),
  });
  const definition = crew({
    id: 'shop',
    agents: [agent({ id: 'clerk', role: 'sells', instructions: 'Sell.', model: 'scripted', tools: [charge] })],
  });
  const seen: string[] = [];
  const models = {
    scripted: scriptedModel({
      script: (request) => {
        const last = request.messages.at(-1)!;
        if (last.role === 'tool') {
          seen.push(last.content);
          return `done: ${last.content}`;
        }
        return { toolCalls: [{ name: 'charge', args: { cents: 500 } }] };
      },
    }),
  };
  return {
    log,
    seen,
    definition,
    models,
    async crashMidCall(storage: Storage) {
      const first = await createNode({ storage, models });
      await first.run(definition, { input: 'sell', runId: 'buy-1' });
      await toolStarted;
      hang = false;
      // `first` is abandoned, not closed: its tool call never returns, like a killed process.
      // A killed process holds no claim any more (with LevelDB its lock dies with it); this
      // storage outlives the abandoned node, so its claim is let go as its death would.
      const { epoch } = decode((await storage.get(claimKey('buy-1')))!) as { epoch: number };
      await storage.release({ runId: 'buy-1', owner: first.owner, epoch });
    },
    /** A node restarted on `storage`, and the approval its resumed run parks the call on. */
    async resumeUntilParked(storage: Storage) {
      const node = await createNode({ storage, models, crews: [definition], resume: false });
      const asked = new Promise<string>((resolve) => node.subscribe((e) => e.type === 'approval.requested' && resolve(e.approvalId)));
      await node.resumeAll();
      return { node, approvalId: await asked };
    },
  };
}

describe('effect ledger', () => {
  it.each([['read'], ['idempotent']] as const)('re-runs an interrupted %s tool with the same idempotency key', async (effect) => {
    const fx = ledgerFixture(effect);
    await using storage = memoryStorage();
    await fx.crashMidCall(storage);
    await using node = await createNode({ storage, models: fx.models, crews: [fx.definition] });
    expect((await node.get('buy-1')!.result()).output).toBe('done: {"charged":500}');
    expect(fx.log).toEqual(['run 500 key=buy-1:clerk/t1/s1/tool/call_0_0', 'run 500 key=buy-1:clerk/t1/s1/tool/call_0_0']);
  });

  it('compensates an interrupted compensatable tool before running it again', async () => {
    const fx = ledgerFixture('compensatable');
    await using storage = memoryStorage();
    await fx.crashMidCall(storage);
    await using node = await createNode({ storage, models: fx.models, crews: [fx.definition] });
    await node.get('buy-1')!.result();
    expect(fx.log.map((l) => l.split(' key=')[0])).toEqual(['run 500', 'compensate 500', 'run 500']);
  });

  it('parks an interrupted irreversible tool for a human, durably, and never runs it again on its own', async () => {
    const fx = ledgerFixture('irreversible');
    await using storage = memoryStorage();
    await fx.crashMidCall(storage);
    {
      await using node = await createNode({ storage, models: fx.models, crews: [fx.definition], resume: false });
      const asked = new Promise<RunEvent>((resolve) => node.subscribe((e) => e.type === 'approval.requested' && resolve(e)));
      await node.resumeAll();
      expect(await asked).toMatchObject({ actor: 'clerk', tool: 'charge', reason: 'outcome-unknown' });
      const [pending] = await node.approvals({ status: 'pending' });
      expect(pending).toMatchObject({ runId: 'buy-1', agentId: 'clerk', tool: 'charge', args: { cents: 500 }, callId: 'clerk/t1/s1/tool/call_0_0' });
    }
    // Still waiting after a restart; the tool ran exactly once.
    await using node = await createNode({ storage, models: fx.models, crews: [fx.definition] });
    expect((await node.runs())[0]).toMatchObject({ id: 'buy-1', status: 'waiting' });
    const [pending] = await node.approvals({ status: 'pending' });
    expect(fx.log).toHaveLength(1);
    // The human checked the payment provider: the charge did happen.
    await node.approve(pending!.id, { result: { charged: 500, confirmedBy: 'ops' } });
    expect((await node.get('buy-1')!.result()).output).toBe('done: {"charged":500,"confirmedBy":"ops"}');
    expect(fx.log).toHaveLength(1);
    expect((await node.approvals())[0]).toMatchObject({ status: 'approved' });
    await expect(node.approve(pending!.id)).rejects.toThrow(/already approved/);
  });

  it('tells the model when a human rejects a parked call', async () => {
    const fx = ledgerFixture('irreversible');
    await using storage = memoryStorage();
    await fx.crashMidCall(storage);
    const { node, approvalId } = await fx.resumeUntilParked(storage);
    await using _node = node;
    await node.reject(approvalId, 'charged twice last week');
    expect((await node.get('buy-1')!.result()).output).toBe('done: error: not executed: rejected by a human: charged twice last week');
    expect(fx.log).toHaveLength(1);
  });

  it('runs a parked call again when a human approves it without a result', async () => {
    const fx = ledgerFixture('irreversible');
    await using storage = memoryStorage();
    await fx.crashMidCall(storage);
    const { node, approvalId } = await fx.resumeUntilParked(storage);
    await using _node = node;
    await node.approve(approvalId, { args: { cents: 450 } });
    expect((await node.get('buy-1')!.result()).output).toBe('done: {"charged":450}');
    expect(fx.log.map((l) => l.split(' key=')[0])).toEqual(['run 500', 'run 450']);
  });
});
