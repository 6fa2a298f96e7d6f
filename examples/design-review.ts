/**
 * A design review as a group chat: a designer, a critic and an engineer take turns (round
 * robin) on one shared transcript until someone says TERMINATE (or 9 lines are spoken).
 *
 *   npx troupe run examples/design-review.ts
 */
import { agent, crew, scriptedModel } from 'troupe';

/** Each speaker's lines in order: round after round, the scripted model plays its next one. */
const script = {
  designer: ['Proposal: a double-walled steel mug with a sliding lid.', 'Revised: screw-on lid with a silicone seal, 350 ml.'],
  critic: ['Sliding lids leak in bags. The lid must seal.', 'The seal fixes leaking. I accept the design.'],
  engineer: ['Steel walls are fine; a screw thread costs 0.40 more per unit.', 'Agreed: screw-on lid, silicone seal, 350 ml. TERMINATE'],
};

export const models = { scripted: scriptedModel({ script, latencyMs: Number(process.env.TROUPE_SCRIPTED_LATENCY_MS ?? 120) }) };

export const input = 'Design a travel mug for commuters.';

export default crew({
  id: 'design-review',
  process: { type: 'groupChat', selector: 'roundRobin', maxRounds: 9, terminateOn: 'TERMINATE' },
  agents: [
    agent({ id: 'designer', role: 'Proposes', instructions: 'Propose and revise the design.', model: 'scripted' }),
    agent({ id: 'critic', role: 'Finds problems', instructions: 'Find what would fail.', model: 'scripted' }),
    agent({ id: 'engineer', role: 'Costs and feasibility', instructions: 'Judge feasibility and cost; end with TERMINATE when agreed.', model: 'scripted' }),
  ],
});
