/**
 * A support desk that hands a customer between specialists: triage reads the request and
 * hands it to billing with context; billing refunds the duplicate charge (an idempotent
 * tool, safe to retry after a crash) and answers.
 *
 *   npx troupe run examples/support-handoff.ts
 */
import { z } from 'zod';
import { agent, crew, scriptedModel, tool, type ScriptedTurn } from 'troupe';

const invoices: Record<string, { cents: number; charges: number }> = { 'INV-12': { cents: 2400, charges: 2 } };

const lookupInvoice = tool({
  name: 'lookup_invoice',
  description: 'Shows an invoice and how often it was charged.',
  input: z.object({ invoice: z.string() }),
  effect: 'read',
  run: ({ invoice }) => invoices[invoice] ?? { error: `no invoice ${invoice}` },
});

const refund = tool({
  name: 'refund',
  description: 'Refunds one charge of an invoice. Deduplicated by idempotency key.',
  input: z.object({ invoice: z.string(), cents: z.number().int().positive() }),
  effect: 'idempotent',
  run: ({ invoice, cents }, ctx) => ({ refunded: cents, invoice, reference: `rf_${ctx.idempotencyKey.slice(-12)}` }),
});

const script: Record<string, ScriptedTurn[]> = {
  triage: [{ text: 'A billing question.', toolCalls: [{ name: 'handoff', args: { to: 'billing', context: 'Customer says INV-12 was charged twice.' } }] }],
  billing: [
    { text: 'Checking the invoice.', toolCalls: [{ name: 'lookup_invoice', args: { invoice: 'INV-12' } }] },
    { text: 'Two charges; refunding one.', toolCalls: [{ name: 'refund', args: { invoice: 'INV-12', cents: 2400 } }] },
    'You were charged twice for INV-12; I refunded 24.00. It will show on your card in 3-5 days.',
  ],
  tech: ['I only handle technical problems.'],
};

export const models = { scripted: scriptedModel({ script, latencyMs: Number(process.env.TROUPE_SCRIPTED_LATENCY_MS ?? 120) }) };

export const input = 'Hi, I think you charged my card twice for invoice INV-12.';

export default crew({
  id: 'support-desk',
  process: { type: 'handoff', entry: 'triage', maxHandoffs: 3, routes: { triage: ['billing', 'tech'], billing: ['tech'], tech: ['billing'] } },
  agents: [
    agent({ id: 'triage', role: 'Routes requests', instructions: 'Hand the customer to billing or tech with the context they need.', model: 'scripted' }),
    agent({ id: 'billing', role: 'Invoices and refunds', instructions: 'Resolve billing problems.', model: 'scripted', tools: [lookupInvoice, refund] }),
    agent({ id: 'tech', role: 'Technical support', instructions: 'Resolve technical problems.', model: 'scripted' }),
  ],
});
