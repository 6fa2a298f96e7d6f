import { z } from 'zod';
import { tool, type Tool } from '../core/tool.js';

/**
 * Control tools: offered to the model like any tool, but never run. The agent machine
 * intercepts a call to one and turns it into a state change (delegating to a worker,
 * handing control to another agent), so the wait for the other agent is a durable state
 * with a mailbox, not a promise that a crash would lose.
 */
export type ControlKind = 'delegate' | 'handoff';

/** A control tool; `control` says which transition a call to it makes. */
export type ControlTool = Tool & { readonly control: ControlKind };

/** Names agents may not give their own tools. */
export const CONTROL_NAMES: readonly string[] = ['delegate', 'handoff'];

const never = () => {
  throw new Error('control tools are handled by the agent machine and never run');
};

/** `delegate({ agent, task })`, for a manager: asks a worker and returns its answer. */
export function delegateTool(workers: readonly string[]): ControlTool {
  const t = tool({
    name: 'delegate',
    description: `Give a task to one of your team (${workers.join(', ')}) and get their answer back. Review it; delegate again if it needs work.`,
    input: z.object({ agent: z.enum(workers as [string, ...string[]]), task: z.string().min(1) }),
    effect: 'read',
    run: never,
  });
  return { ...t, control: 'delegate' };
}

/** `handoff({ to, context })`: ends this agent's turn and transfers the conversation. */
export function handoffTool(targets: readonly string[]): ControlTool {
  const t = tool({
    name: 'handoff',
    description: `Transfer the conversation to another agent (${targets.join(', ')}) with the context they need. Your turn ends.`,
    input: z.object({ to: z.enum(targets as [string, ...string[]]), context: z.string() }),
    effect: 'read',
    run: never,
  });
  return { ...t, control: 'handoff' };
}
