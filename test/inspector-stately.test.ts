import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createWebSocketInspector } from '@statelyai/inspect';
import { describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { agent, createNode, crew, memoryStorage, scriptedModel, staticSecrets } from '../index.js';
import { statelySafe } from '../inspector/index.js';
import { lookupTool } from './helpers/lookup-tool.js';

/**
 * The documented recipe for Stately's inspector (docs/inspector.md) on a Troupe node: the
 * node's inspection events go over a real WebSocket on 127.0.0.1 to what stands in for
 * Stately's relay (`createInspectorServer`, which needs the hosted UI and opens a browser),
 * and this test reads what would reach the hosted page.
 */

const PLANTED = 'sk-stately-planted-41c3b0f6';
const CONVERSATION_TEXT = 'Looking the token up.';

const lookup = lookupTool();
const definition = crew({ id: 'stately-crew', agents: [agent({ id: 'scout', role: 'looks things up', instructions: 'Look it up.', model: 'scripted', tools: [lookup] })] });
const models = { scripted: scriptedModel({ script: { scout: [{ text: CONVERSATION_TEXT, toolCalls: [{ name: 'lookup', args: { query: 'private notes' } }] }, 'Found it.'] } }) };

describe('@statelyai/inspect on a Troupe node', () => {
  it('streams every actor, its states and event types, and none of the conversation, tool data or secrets', { timeout: 8000 }, async () => {
    const relay = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(relay, 'listening');
    const frames: string[] = [];
    let done: () => void;
    let scoutSession: string | undefined;
    const doneSessions = new Set<string>();
    const scoutDone = new Promise<void>((resolve) => (done = resolve));
    relay.on('connection', (socket) =>
      socket.on('message', (data) => {
        const text = String(data);
        frames.push(text);
        const event = JSON.parse(text) as { type: string; name?: string; snapshot?: { value?: unknown }; sessionId?: string };
        // Stately may register an actor after its first snapshots: both orders count.
        if (event.type === '@xstate.actor' && event.name === 'scout') scoutSession = event.sessionId;
        if (event.type === '@xstate.snapshot' && event.snapshot?.value === 'done' && event.sessionId) doneSessions.add(event.sessionId);
        if (scoutSession && doneSessions.has(scoutSession)) done();
      }),
    );
    try {
      // The recipe, as docs/inspector.md gives it.
      const stately = createWebSocketInspector({ url: `ws://127.0.0.1:${(relay.address() as AddressInfo).port}`, ...statelySafe });
      // Connected before the node starts: until then it holds at most 200 events and drops the oldest.
      await once(relay, 'connection');
      await using storage = memoryStorage();
      await using node = await createNode({ storage, models, resume: false, secrets: staticSecrets({ PLANTED }), inspect: stately.inspect });
      await (await node.run(definition, { input: 'find the notes', runId: 'stately-1' })).result();
      await scoutDone;
      stately.stop();

      const events = frames.map((f) => JSON.parse(f) as { type: string; name?: string; sessionId: string; snapshot?: { value?: unknown; context?: Record<string, unknown> }; event?: { type: string } });
      // Every agent registers with its machine, and every call it invokes (model, tools, deadline) ...
      const actors = events.filter((e) => e.type === '@xstate.actor').map((e) => e.name);
      expect(actors).toEqual(expect.arrayContaining(['stately-crew', 'scout', 'model', 'tools']));
      const scoutActor = events.find((e) => e.type === '@xstate.actor' && e.name === 'scout')! as { definition?: string };
      expect(JSON.parse(scoutActor.definition!)).toMatchObject({ id: expect.any(String), states: expect.objectContaining({ planning: expect.any(Object) }) });
      // ... the crew's root with its nested states ...
      expect(events.some((e) => e.type === '@xstate.snapshot' && JSON.stringify(e.snapshot?.value) === '{"running":"active"}')).toBe(true);
      // ... each agent's states arrive in order, with the events that moved it (types only).
      const values = events.filter((e) => e.type === '@xstate.snapshot' && e.sessionId === scoutSession).map((e) => e.snapshot!.value);
      expect(values.filter((v, i) => v !== values[i - 1])).toEqual(expect.arrayContaining(['planning', 'acting', 'done']));
      for (const e of events) if (e.event) expect(Object.keys(e.event)).toEqual(['type']);
      // Contexts keep their counters only: the conversation, arguments and results stay in the process.
      const scoutContext = events.filter((e) => e.sessionId === scoutSession && e.snapshot?.context).at(-1)!.snapshot!.context!;
      expect(scoutContext).toMatchObject({ step: expect.any(Number), tasksDone: 1 });
      expect(scoutContext).not.toHaveProperty('conversation');
      const all = frames.join('\n');
      expect(all).not.toContain(CONVERSATION_TEXT);
      expect(all).not.toContain('private notes');
      expect(all).not.toContain(PLANTED);
      expect(all).not.toContain('[redacted]');
    } finally {
      for (const client of relay.clients) client.terminate();
      await new Promise((resolve) => relay.close(resolve));
    }
  });
});
