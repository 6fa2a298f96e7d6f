/**
 * An order crew whose tools cover every effect kind, writing their side effects to a
 * "world" directory (`TROUPE_WORLD`, default `.troupe/world`) so crash trials can check that
 * nothing irreversible happened twice and nothing acknowledged was lost.
 *
 *   npx troupe run examples/order-crew.ts
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { z } from 'zod';
import { agent, crew, ErrorCode, scriptedModel, tool, TroupeError, type Script, type ScriptedTurn, type ToolContext } from 'troupe';

const world = process.env.TROUPE_WORLD ?? '.troupe/world';
const toolLatency = Number(process.env.TROUPE_TOOL_LATENCY_MS ?? 20);
const ledgerFile = () => join(world, 'effects.jsonl');

/** One side effect in the outside world. */
export interface Effect {
  kind: 'reserve' | 'hold' | 'release' | 'email';
  key: string;
  detail: unknown;
}

/** Everything the tools did to the world so far. */
export function readEffects(dir = world): Effect[] {
  try {
    return readFileSync(join(dir, 'effects.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Effect);
  } catch {
    return [];
  }
}

/** Appends and fsyncs, like a remote system that acknowledged the write. */
function record(effect: Effect): void {
  mkdirSync(world, { recursive: true });
  const fd = openSync(ledgerFile(), 'a');
  try {
    writeSync(fd, `${JSON.stringify(effect)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Tools take a little time, half before their effect and half after it (a remote system that
 * acknowledged the write but has not answered yet), so a kill can land on either side of the
 * effect. Hooks for crash tests, all on stdout:
 * - `TROUPE_ANNOUNCE_TOOLS=1`: every tool prints `tool <name> started` when it starts (its
 *   intent is on disk by then), so a harness can time a kill inside a call.
 * - `TROUPE_SLOW_TOOL=name`: that tool prints `slow tool <name> started` and never finishes
 *   (until the run stops): the process dies inside the call, before its effect.
 * - `TROUPE_HANG_AFTER_EFFECT=name`: that tool does its effect, prints `tool <name> effect
 *   recorded` and never finishes: the process dies after the world saw the effect but before
 *   the ledger got the result.
 */
const untilStopped = (ctx: ToolContext): Promise<never> =>
  new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true }));

const work = (ctx: ToolContext, name: string): Promise<unknown> => {
  if (process.env.TROUPE_ANNOUNCE_TOOLS === '1') process.stdout.write(`tool ${name} started\n`);
  if (process.env.TROUPE_SLOW_TOOL === name) {
    process.stdout.write(`slow tool ${name} started\n`);
    return untilStopped(ctx);
  }
  return toolLatency > 0 ? delay(toolLatency / 2, undefined, { signal: ctx.signal }) : Promise.resolve();
};

/** The part of a tool's time after its effect. */
const answer = (ctx: ToolContext, name: string): Promise<unknown> => {
  if (process.env.TROUPE_HANG_AFTER_EFFECT === name) {
    process.stdout.write(`tool ${name} effect recorded\n`);
    return untilStopped(ctx);
  }
  return toolLatency > 0 ? delay(toolLatency / 2, undefined, { signal: ctx.signal }) : Promise.resolve();
};

const stock: Record<string, number> = { 'blue-mug': 12, 'red-mug': 0 };

const checkStock = tool({
  name: 'check_stock',
  description: 'How many of an item are in stock.',
  input: z.object({ item: z.string() }),
  effect: 'read',
  run: async ({ item }, ctx) => {
    await work(ctx, 'check_stock');
    await answer(ctx, 'check_stock');
    return { item, available: stock[item] ?? 0 };
  },
});

const reserveStock = tool({
  name: 'reserve_stock',
  description: 'Reserves items; deduplicated by idempotency key.',
  input: z.object({ item: z.string(), qty: z.number().int().positive() }),
  effect: 'idempotent',
  run: async ({ item, qty }, ctx) => {
    await work(ctx, 'reserve_stock');
    const existing = readEffects().find((e) => e.kind === 'reserve' && e.key === ctx.idempotencyKey);
    if (!existing) record({ kind: 'reserve', key: ctx.idempotencyKey, detail: { item, qty } });
    await answer(ctx, 'reserve_stock');
    return { reserved: qty, item };
  },
});

const holdPayment = tool({
  name: 'hold_payment',
  description: 'Places a hold on the card; released by compensation.',
  input: z.object({ cents: z.number().int().positive() }),
  effect: 'compensatable',
  run: async ({ cents }, ctx) => {
    await work(ctx, 'hold_payment');
    record({ kind: 'hold', key: ctx.idempotencyKey, detail: { cents } });
    await answer(ctx, 'hold_payment');
    return { held: cents };
  },
  compensate: async (_args, ctx) => {
    const holds = readEffects().filter((e) => e.key === ctx.idempotencyKey);
    const open = holds.filter((e) => e.kind === 'hold').length - holds.filter((e) => e.kind === 'release').length;
    if (open > 0) record({ kind: 'release', key: ctx.idempotencyKey, detail: null });
  },
});

const sendConfirmation = tool({
  name: 'send_confirmation',
  description: 'E-mails the customer. Cannot be unsent.',
  input: z.object({ to: z.string(), text: z.string() }),
  effect: 'irreversible',
  run: async ({ to, text }, ctx) => {
    await work(ctx, 'send_confirmation');
    record({ kind: 'email', key: ctx.idempotencyKey, detail: { to, text } });
    await answer(ctx, 'send_confirmation');
    return { sent: true, to };
  },
});

/** The crew's answer when the confirmation went out (or a human confirmed it had). */
export const CONFIRMED_OUTPUT = 'Order placed: 2 blue mugs reserved, 24.00 held, confirmation sent to ada@example.com.';
/** The crew's answer when the confirmation was not executed (a human rejected it). */
export const UNCONFIRMED_OUTPUT = 'Order placed: 2 blue mugs reserved, 24.00 held; the confirmation to ada@example.com was not sent.';

const turns: Record<string, readonly ScriptedTurn[]> = {
  clerk: [
    { text: 'Checking stock.', toolCalls: [{ name: 'check_stock', args: { item: 'blue-mug' } }] },
    { text: 'Reserving two.', toolCalls: [{ name: 'reserve_stock', args: { item: 'blue-mug', qty: 2 } }] },
    'Reserved 2 blue mugs (12 were in stock).',
  ],
  cashier: [
    { text: 'Holding the payment.', toolCalls: [{ name: 'hold_payment', args: { cents: 2400 } }] },
    { text: 'Confirming to the customer.', toolCalls: [{ name: 'send_confirmation', args: { to: 'ada@example.com', text: 'Your 2 blue mugs are reserved.' } }] },
    CONFIRMED_OUTPUT,
  ],
};

/**
 * The turns above, chosen by how many assistant turns the conversation holds (like a script
 * of turns), except that a cashier whose confirmation came back as an error (rejected by a
 * human) says it was not sent: both answers are deterministic.
 */
const script: Script = (request) => {
  const index = request.messages.filter((m) => m.role === 'assistant').length;
  const last = request.messages.at(-1);
  if (request.agent === 'cashier' && index === 2 && last?.role === 'tool' && last.isError) return UNCONFIRMED_OUTPUT;
  const turn = turns[request.agent]?.[index];
  if (turn === undefined) {
    throw new TroupeError(ErrorCode.MODEL_FAILED, `order crew script has no turn ${index + 1} for agent "${request.agent}"`, { details: { retryable: false } });
  }
  return turn;
};

/** Scripted, with latency so a crash can land between any two steps. */
export const models = { scripted: scriptedModel({ script, latencyMs: Number(process.env.TROUPE_SCRIPTED_LATENCY_MS ?? 40) }) };

export const input = 'Order two blue mugs for ada@example.com and charge 24.00.';

export default crew({
  id: 'order-crew',
  agents: [
    agent({ id: 'clerk', role: 'Reserves stock', instructions: 'Check stock, then reserve.', model: 'scripted', tools: [checkStock, reserveStock] }),
    agent({ id: 'cashier', role: 'Takes payment', instructions: 'Hold payment, then confirm.', model: 'scripted', tools: [holdPayment, sendConfirmation] }),
  ],
});

