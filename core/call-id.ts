/**
 * The one rule for the stable ids of an agent's model and tool calls. They name the agent,
 * its task (1-based, counted over the run) and the step within the task, so a call has the
 * same id across a crash and its resume and the effect ledger can find its record.
 */

/** `<agent>/t<task>/s<step>/model`. */
export function modelCallId(agentId: string, task: number, step: number): string {
  return `${agentId}/t${task}/s${step}/model`;
}

/** `<agent>/t<task>/s<step>/tool/<id>`, where `id` is the model's id of the tool call. */
export function toolCallId(agentId: string, task: number, step: number, id: string): string {
  return `${agentId}/t${task}/s${step}/tool/${id}`;
}

// Agent ids never contain `/` (core rule of actor ids); the model's call id may.
const TOOL_CALL_ID = /^([^/]+)\/t(\d+)\/s(\d+)\/tool\/(.+)$/;

/** The parts of a tool call id, or `undefined` when `callId` is not one. */
export function parseToolCallId(callId: string): { agentId: string; task: number; step: number; id: string } | undefined {
  const m = TOOL_CALL_ID.exec(callId);
  return m ? { agentId: m[1]!, task: Number(m[2]), step: Number(m[3]), id: m[4]! } : undefined;
}

/** The agent that made call `callId` (model or tool): everything before its first `/`. */
export function agentOfCallId(callId: string): string {
  const cut = callId.indexOf('/');
  return cut < 0 ? callId : callId.slice(0, cut);
}

const CALL_ID = /^([^/]+)\/t(\d+)\/s(\d+)\/(model|tool\/.+)$/;

/** Agent, task and step of any call id (model or tool), or `undefined` when `callId` is neither. */
export function parseCallId(callId: string): { agentId: string; task: number; step: number; kind: 'model' | 'tool' } | undefined {
  const m = CALL_ID.exec(callId);
  return m ? { agentId: m[1]!, task: Number(m[2]), step: Number(m[3]), kind: m[4] === 'model' ? 'model' : 'tool' } : undefined;
}
