import { once } from 'node:events';
import { join } from 'node:path';
import { request } from 'node:http';
import type { AnyActorRef, InspectionEvent } from 'xstate';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createNode, memoryStorage, scriptedModel, type Storage, type TroupeNode } from '../index.js';
import { ANY_STATE, clean, createInspector, graphsOf, machineGraph, type GraphEdge, type MachineGraph, type TimelineEvent } from '../inspector/index.js';
import { createAgentMachine, agent } from '../actors/agent.js';
import { levelStorage } from '../storage/level.js';
import { runTroupe, spawnTroupe } from './helpers/cli.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';
import { tempDir } from './helpers/temp.js';

const EXPECTED_MESSAGES = ['crew->researcher:task', 'researcher->crew:result', 'crew->writer:task', 'writer->crew:result'];
const RESEARCHER_STATES = ['idle', 'planning', 'acting', 'planning', 'acting', 'planning', 'done'];

/** A WebSocket client of the inspector that keeps every message it gets. */
async function connect(url: string, headers: Record<string, string> = {}) {
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}ws`, { headers });
  const inbox: any[] = []; // eslint-disable-line @typescript-eslint/no-explicit-any -- wire JSON
  const waiters: Array<{ test(m: any): boolean; resolve(m: any): void }> = []; // eslint-disable-line @typescript-eslint/no-explicit-any
  ws.on('message', (data) => {
    const message = JSON.parse(String(data));
    inbox.push(message);
    for (const w of [...waiters]) if (w.test(message)) waiters.splice(waiters.indexOf(w), 1) && w.resolve(message);
  });
  await once(ws, 'open');
  return {
    ws,
    inbox,
    send: (message: unknown) => ws.send(JSON.stringify(message)),
    /** The first message (already received or still to come) that passes `test`. */
    waitFor: (test: (m: any) => boolean, ms = 10_000) => { // eslint-disable-line @typescript-eslint/no-explicit-any
      const seen = inbox.find(test);
      if (seen) return Promise.resolve(seen);
      return new Promise<any>((resolve, reject) => { // eslint-disable-line @typescript-eslint/no-explicit-any
        const timer = setTimeout(() => reject(new Error(`no matching message in ${ms} ms; got ${JSON.stringify(inbox).slice(0, 2000)}`)), ms);
        waiters.push({ test, resolve: (m) => (clearTimeout(timer), resolve(m)) });
      });
    },
    [Symbol.asyncDispose]: async () => {
      if (ws.readyState === ws.CLOSED) return;
      ws.close();
      await once(ws, 'close');
    },
  };
}

/** The run as the page sees it after following `runId`: its `run` message, then live events. */
async function follow(client: Awaited<ReturnType<typeof connect>>, runId: string) {
  const first = await client.waitFor((m) => m.type === 'run' && m.runId === runId);
  await client.waitFor((m) => (m.type === 'event' && m.runId === runId && m.event.kind === 'run' && m.event.status === 'completed') || (m === first && m.timeline.some((e: TimelineEvent) => e.kind === 'run' && e.status === 'completed')));
  const live = client.inbox.filter((m) => m.type === 'event' && m.runId === runId).map((m) => m.event as TimelineEvent);
  return { first, live, timeline: [...(first.timeline as TimelineEvent[]), ...live] };
}

/** States per actor (repeats folded, as the page shows them) and the message sequence. */
function summarise(timeline: TimelineEvent[]) {
  const states: Record<string, string[]> = {};
  for (const e of timeline) if (e.kind === 'state' && (states[e.actor] ??= []).at(-1) !== e.state) states[e.actor]!.push(e.state);
  const messages = timeline.flatMap((e) => (e.kind === 'message' ? [`${e.from}->${e.to}:${e.messageType}`] : []));
  return { states, messages, runs: timeline.filter((e) => e.kind === 'run').map((e) => e.kind === 'run' && e.status) };
}

const withoutTs = (timeline: TimelineEvent[]) => timeline.map(({ ts: _ts, ...rest }) => rest);

async function setup(latencyMs = 0, storage: Storage = memoryStorage()) {
  const node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript, latencyMs }) }, resume: false });
  const inspector = await createInspector({ node, storage });
  return {
    node,
    storage,
    inspector,
    [Symbol.asyncDispose]: async () => {
      await inspector.close();
      await node.close();
      await storage.close();
    },
  };
}

describe('machine graphs', () => {
  const agentGraph = () => machineGraph(createAgentMachine(agent({ id: 'a', role: 'r', instructions: 'i', model: 'scripted' })));
  const edge = (g: MachineGraph, from: string, to: string) => g.edges.filter((e) => e.from === from && e.to === to);

  it('reads every state and transition of the real agent machine into plain data, laid out without overlaps', async () => {
    const g = await agentGraph();
    expect(g.initial).toBe('idle');
    expect(g.nodes.map((n) => n.id).sort()).toEqual(
      ['*', 'idle', 'planning', 'acting', 'observing', 'recovering', 'awaitingApproval', 'delegating', 'done', 'failed'].sort(),
    );
    const plain = (list: GraphEdge[]) => list.map(({ from, to, event, guard }) => ({ from, to, event, ...(guard ? { guard } : {}) }));
    expect(plain(edge(g, 'idle', 'planning'))).toEqual([{ from: 'idle', to: 'planning', event: 'envelope', guard: 'isTask' }]);
    expect(plain(edge(g, 'planning', 'acting'))).toEqual([{ from: 'planning', to: 'acting', event: 'model done', guard: 'wantsTools' }]);
    expect(edge(g, 'acting', 'awaitingApproval')[0]).toMatchObject({ event: 'tools error', guard: 'needsApproval' });
    expect(edge(g, 'observing', 'planning')[0]).toMatchObject({ event: 'always' });
    expect(edge(g, 'recovering', 'failed')[0]).toMatchObject({ event: 'always', guard: 'retriesExhausted' });
    // The supervisor's reset is declared on the machine: it leaves any state.
    expect(plain(edge(g, ANY_STATE, 'idle'))).toEqual([{ from: ANY_STATE, to: 'idle', event: 'envelope', guard: 'isReset' }]);
    expect(g.nodes.find((n) => n.id === 'planning')?.invokes).toEqual(['deadline', 'model']);
    expect(JSON.parse(JSON.stringify(g))).toEqual(g);
    // Every box inside the drawing, no two boxes overlapping, every edge routed with its label placed.
    for (const n of g.nodes) expect(n.x >= 0 && n.y >= 0 && n.x + n.width <= g.width && n.y + n.height <= g.height).toBe(true);
    for (const a of g.nodes) for (const b of g.nodes) if (a !== b) expect(a.x + a.width <= b.x || b.x + b.width <= a.x || a.y + a.height <= b.y || b.y + b.height <= a.y).toBe(true);
    for (const e of g.edges) {
      expect(e.points.length).toBeGreaterThanOrEqual(2);
      expect(e.label).not.toBeNull();
    }
  });

  it('draws a compound state as a box holding its children, and transitions from the state that declares them', async () => {
    const graphs = await graphsOf(twoAgentCrew({ crew: { blackboard: true } }));
    expect(Object.keys(graphs).sort()).toEqual(['crew', 'researcher', 'writer']);
    const crew = graphs.crew!;
    expect(crew.initial).toBe('running.active');
    const at = (id: string) => crew.nodes.find((n) => n.id === id)!;
    expect(at('running')).toMatchObject({ kind: 'compound', parent: null, label: 'running' });
    for (const child of ['running.active', 'running.backingOff']) {
      const c = at(child);
      expect(c.parent).toBe('running');
      const p = at('running');
      expect(c.x > p.x && c.y > p.y && c.x + c.width < p.x + p.width && c.y + c.height < p.y + p.height).toBe(true);
    }
    expect(crew.nodes.findIndex((n) => n.id === 'running')).toBeLessThan(crew.nodes.findIndex((n) => n.id === 'running.active'));
    // "done" is reached from the box (any of its states), not from each leaf.
    expect(crew.edges.filter((e) => e.to === 'done').map((e) => e.from)).toEqual(['running']);
    expect(graphs.researcher!.nodes.map((n) => n.id)).toContain('awaitingApproval');
  });
});

describe('XState inspection observers', () => {
  it('see snapshot events of the root and of every agent (function and observer forms)', async () => {
    const calls: InspectionEvent[] = [];
    const observed: InspectionEvent[] = [];
    for (const inspect of [(e: InspectionEvent) => void calls.push(e), { next: (e: InspectionEvent) => void observed.push(e) }]) {
      await using storage = memoryStorage();
      await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript }) }, inspect });
      await (await node.run(twoAgentCrew(), { input: 'brief me', runId: 'r1' })).result();
    }
    for (const events of [calls, observed]) {
      const snapshots = events.filter((e) => e.type === '@xstate.snapshot');
      const root = snapshots.filter((e) => e.actorRef.sessionId === e.rootId);
      expect(root.length).toBeGreaterThan(0);
      expect(root.every((e) => (e.actorRef as { systemId?: string }).systemId === 'crew')).toBe(true);
      const valuesOf = (id: string) => snapshots.filter((e) => (e.actorRef as AnyActorRef).id === id).map((e) => (e.snapshot as { value?: unknown }).value);
      expect(valuesOf('researcher')).toEqual(expect.arrayContaining(['planning', 'acting', 'done']));
      expect(valuesOf('writer')).toEqual(expect.arrayContaining(['planning', 'done']));
      expect(events.some((e) => e.type === '@xstate.event' && (e.actorRef as AnyActorRef).id === 'writer')).toBe(true);
    }
  });
});

describe('inspector server', () => {
  it('serves one self-contained page: nonce-locked inline script and style, nothing from elsewhere', async () => {
    await using ctx = await setup();
    const response = await fetch(ctx.inspector.url);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const csp = response.headers.get('content-security-policy')!;
    const nonce = /script-src 'nonce-([^']+)'/.exec(csp)![1]!;
    expect(csp).toContain("default-src 'none'");
    const html = await response.text();
    expect(html).toContain(`<script nonce="${nonce}">`);
    expect(html).toContain(`<style nonce="${nonce}">`);
    expect(html).not.toMatch(/(src|href)\s*=\s*["']?(https?:)?\/\//i);
    expect(html).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
    expect((await fetch(new URL('/nope', ctx.inspector.url))).status).toBe(404);
    const status = await new Promise<number>((resolve, reject) =>
      request(ctx.inspector.url, { headers: { host: 'attacker.example' } }, (res) => resolve(res.statusCode!)).on('error', reject).end(),
    );
    expect(status).toBe(403);
  });

  it('streams a live run to a client, and replays it from the journal once finished', async () => {
    await using ctx = await setup(60);
    await using client = await connect(ctx.inspector.url);
    expect(await client.waitFor((m) => m.type === 'hello')).toMatchObject({ version: 1, follows: true, previewChars: 200 });
    await client.waitFor((m) => m.type === 'runs');
    const run = await ctx.node.run(twoAgentCrew(), { input: 'brief me \u0007<b>now</b>', runId: 'r1' });
    client.send({ type: 'select', runId: 'r1' });
    const seen = await follow(client, 'r1');
    expect(seen.first).toMatchObject({ live: true, graphs: { crew: { initial: 'running.active' }, researcher: { initial: 'idle' }, writer: { initial: 'idle' } } });
    expect(seen.live.length).toBeGreaterThan(5); // most of the run arrived as it happened
    const live = summarise(seen.timeline);
    expect(live.states.researcher).toEqual(RESEARCHER_STATES);
    expect(live.states.writer).toEqual(['idle', 'planning', 'done']);
    expect(live.messages).toEqual(EXPECTED_MESSAGES);
    expect(live.runs).toEqual(['started', 'completed']);
    await run.result();

    const runs = await client.waitFor((m) => m.type === 'runs' && m.runs.some((r: { id: string; status: string }) => r.id === 'r1' && r.status === 'completed'));
    expect(runs.runs[0]).toMatchObject({ id: 'r1', crew: 'pair', live: false, input: 'brief me <b>now</b>', output: 'final: a brief about actor and state' });

    await using later = await connect(ctx.inspector.url);
    later.send({ type: 'select', runId: 'r1' });
    const replay = await later.waitFor((m) => m.type === 'run');
    expect(replay.live).toBe(false);
    expect(withoutTs(replay.timeline)).toEqual(withoutTs(seen.timeline));
  });

  it('follows a resumed run without repeating what happened before the restart', async () => {
    const storage = memoryStorage();
    const first = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript, latencyMs: 40 }) }, resume: false });
    const run = await first.run(twoAgentCrew(), { input: 'brief me', runId: 'r2' });
    await new Promise<void>((resolve) => run.subscribe((e) => e.type === 'state' && e.actor === 'researcher' && e.state === 'acting' && resolve()));
    await first.close();
    await using ctx = { storage, node: undefined as TroupeNode | undefined, [Symbol.asyncDispose]: async () => void (await ctx.node?.close(), await storage.close()) };
    ctx.node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript, latencyMs: 40 }) }, crews: [twoAgentCrew()], resume: false });
    await using inspector = await createInspector({ node: ctx.node, storage });
    await using client = await connect(inspector.url);
    await ctx.node.resumeAll();
    client.send({ type: 'select', runId: 'r2' });
    const { timeline } = await follow(client, 'r2');
    const seen = summarise(timeline);
    expect(seen.runs).toEqual(['started', 'resumed', 'completed']);
    expect(seen.states.researcher).toEqual(RESEARCHER_STATES);
    expect(seen.messages).toEqual(EXPECTED_MESSAGES);
  });

  it('joins a run already under way: journal first, then live, each step once', async () => {
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript, latencyMs: 40 }) }, resume: false });
    const run = await node.run(twoAgentCrew(), { input: 'brief me', runId: 'r3' });
    await new Promise<void>((resolve) => run.subscribe((e) => e.type === 'state' && e.actor === 'researcher' && e.state === 'acting' && resolve()));
    await using inspector = await createInspector({ node, storage });
    await using client = await connect(inspector.url);
    client.send({ type: 'select', runId: 'r3' });
    const seen = summarise((await follow(client, 'r3')).timeline);
    expect(seen.states.researcher).toEqual(RESEARCHER_STATES);
    expect(seen.messages).toEqual(EXPECTED_MESSAGES);
    expect(seen.runs).toEqual(['started', 'completed']);
  });

  it('answers bad requests with an error, drops oversized frames and refuses other origins', async () => {
    await using ctx = await setup();
    await using client = await connect(ctx.inspector.url);
    client.ws.send('not json');
    expect(await client.waitFor((m) => m.type === 'error')).toMatchObject({ message: expect.stringMatching(/bad request/) });
    client.send({ type: 'select', runId: 'nope' });
    expect(await client.waitFor((m) => m.type === 'error' && /no run "nope"/.test(m.message))).toBeDefined();
    client.send({ type: 'select', runId: '../../etc' });
    await client.waitFor((m) => m.type === 'error' && m !== client.inbox.find((x) => x.type === 'error'));
    client.ws.send(JSON.stringify({ type: 'runs', pad: 'x'.repeat(8 * 1024) }));
    const [code] = (await once(client.ws, 'close')) as [number];
    expect(code).toBe(1009);

    const foreign = new WebSocket(`${ctx.inspector.url.replace(/^http/, 'ws')}ws`, { origin: 'http://evil.example' });
    const [refused, response] = (await once(foreign, 'unexpected-response')) as [{ destroy(): void }, { statusCode: number }];
    expect(response.statusCode).toBe(403);
    refused.destroy();
    const same = new WebSocket(`${ctx.inspector.url.replace(/^http/, 'ws')}ws`, { origin: ctx.inspector.url.slice(0, -1) });
    await once(same, 'open');
    same.close();
  });

  it('answers step, whole-text and checkpoint requests from storage, and bad ones with an error', async () => {
    await using ctx = await setup();
    await (await ctx.node.run(twoAgentCrew(), { input: 'brief me', runId: 'r5' })).result();
    await using client = await connect(ctx.inspector.url);
    client.send({ type: 'select', runId: 'r5' });
    const { timeline } = (await client.waitFor((m) => m.type === 'run')) as { timeline: TimelineEvent[] };
    const toolCall = timeline.find((e) => e.kind === 'call' && e.call === 'tool')!;
    expect(toolCall.seq).toBeGreaterThan(0);
    client.send({ type: 'step', runId: 'r5', seq: toolCall.seq });
    const { step } = await client.waitFor((m) => m.type === 'step');
    expect(step).toMatchObject({ seq: toolCall.seq, kind: 'tool.call', actor: 'researcher', call: { kind: 'tool', status: 'done', args: { cut: false } } });
    expect(step.checkpoint.journalSeq).toBeGreaterThanOrEqual(toolCall.seq!);
    expect(step.conversation.messages.map((m: { role: string }) => m.role)).toContain('tool');
    client.send({ type: 'full', runId: 'r5', seq: toolCall.seq, path: ['call', 'args'] });
    expect((await client.waitFor((m) => m.type === 'full')).text).toEqual(step.call.args);
    client.send({ type: 'checkpoints', runId: 'r5' });
    const { checkpoints } = await client.waitFor((m) => m.type === 'checkpoints');
    expect(checkpoints.length).toBeGreaterThan(2);
    expect(checkpoints.at(-1).states).toMatchObject({ researcher: 'done', writer: 'done' });
    for (const bad of [{ type: 'step', runId: 'r5', seq: 10_000 }, { type: 'full', runId: 'r5', seq: toolCall.seq, path: ['run', 'nothing'] }]) {
      const before = client.inbox.length;
      client.send(bad);
      expect(await client.waitFor((m) => m.type === 'error' && client.inbox.indexOf(m) >= before)).toMatchObject({ message: expect.stringMatching(/has no (step|text)/) });
    }
  });

  it('takes actions only as JSON with the token; validates them; without a node it says it is read-only', async () => {
    await using ctx = await setup();
    const post = async (url: string, body: string, headers: Record<string, string>) => {
      const response = await fetch(new URL('/action', url), { method: 'POST', headers, body });
      return { status: response.status, body: (await response.json()) as { ok: boolean; error?: { code: string; message: string } } };
    };
    const auth = { 'content-type': 'application/json', authorization: `Bearer ${ctx.inspector.token}` };
    expect(await post(ctx.inspector.url, '{}', { 'content-type': 'application/json' })).toMatchObject({ status: 401, body: { ok: false, error: { code: 'TOKEN_REQUIRED' } } });
    expect((await post(ctx.inspector.url, 'not json', auth)).status).toBe(400);
    expect(await post(ctx.inspector.url, JSON.stringify({ action: 'approve' }), auth)).toMatchObject({ status: 400, body: { error: { message: expect.stringMatching(/approvalId/) } } });
    expect((await post(ctx.inspector.url, JSON.stringify({ action: 'approve', approvalId: 'x', pad: 'x'.repeat(70 * 1024) }), auth)).status).toBe(413);
    expect(await post(ctx.inspector.url, JSON.stringify({ action: 'approve', approvalId: 'missing' }), auth)).toMatchObject({ status: 409, body: { error: { code: 'APPROVAL_NOT_FOUND' } } });
    expect((await fetch(new URL('/action', ctx.inspector.url))).status).toBe(405);

    await using readOnly = await createInspector({ storage: ctx.storage });
    expect(await post(readOnly.url, JSON.stringify({ action: 'fork', runId: 'r1', at: 1 }), { ...auth, authorization: `Bearer ${readOnly.token}` })).toMatchObject({ status: 409, body: { error: { code: 'READ_ONLY' } } });
    expect(readOnly.token).not.toBe(ctx.inspector.token);
  });

  it('opens a run exported with `troupe export` once `troupe import` loaded it into a database of its own', async () => {
    await using from = await tempDir();
    await using to = await tempDir();
    await using out = await tempDir();
    {
      await using storage = await levelStorage({ path: from.path, create: true });
      await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript }) }, resume: false });
      await (await node.run(twoAgentCrew(), { input: 'brief me', runId: 'x1' })).result();
    }
    const file = join(out.path, 'x1.recording.json');
    expect((await runTroupe(['export', 'x1', '--db', from.path, '--out', file])).code).toBe(0);
    expect((await runTroupe(['import', file, '--db', to.path])).code).toBe(0);
    await using storage = await levelStorage({ path: to.path, create: false });
    await using inspector = await createInspector({ storage });
    await using client = await connect(inspector.url);
    client.send({ type: 'select', runId: 'x1' });
    const { timeline } = (await client.waitFor((m) => m.type === 'run')) as { timeline: TimelineEvent[] };
    expect(summarise(timeline).messages).toEqual(EXPECTED_MESSAGES);
    const toolCall = timeline.find((e) => e.kind === 'call' && e.call === 'tool')!;
    client.send({ type: 'step', runId: 'x1', seq: toolCall.seq });
    expect((await client.waitFor((m) => m.type === 'step')).step).toMatchObject({ kind: 'tool.call', call: { kind: 'tool', status: 'done' }, conversation: { actor: 'researcher' } });
  });

  it('closes idempotently: clients get 1001, the port stops answering, node and storage stay open', async () => {
    await using ctx = await setup();
    const client = await connect(ctx.inspector.url);
    expect(ctx.inspector.clients).toBe(1);
    const closed = once(client.ws, 'close');
    await Promise.all([ctx.inspector.close(), ctx.inspector.close()]);
    expect(ctx.inspector.status).toBe('closed');
    expect(((await closed) as [number])[0]).toBe(1001);
    await expect(fetch(ctx.inspector.url)).rejects.toThrow();
    expect(ctx.node.status).toBe('running');
    expect(ctx.storage.status).toBe('open');
    await ctx.inspector[Symbol.asyncDispose]();
  });

  it('rejects misuse with TypeErrors', async () => {
    await using storage = memoryStorage();
    await expect(createInspector({} as never)).rejects.toThrow(TypeError);
    await expect(createInspector({ storage, host: '0.0.0.0' as never })).rejects.toThrow(/loopback|no authentication/);
    await expect(createInspector({ storage, port: -1 })).rejects.toThrow(TypeError);
    await expect(createInspector({ storage, machines: [twoAgentCrew(), twoAgentCrew()] })).rejects.toThrow(/two machines/);
  });

  it('strips control characters and caps previews at 200 characters', () => {
    expect(clean('a\u0000b\u001b[31mc\u202ed\n\te')).toBe('ab[31mcd e');
    const long = clean('x'.repeat(500));
    expect(long).toHaveLength(201);
    expect(long.endsWith('…')).toBe(true);
    expect(clean({ a: 1 })).toBe('{"a":1}');
    expect(clean(undefined)).toBe('');
  });
});

describe('troupe inspect', () => {
  it('serves the stored runs, runs a crew module here and exits 0 on SIGINT', async () => {
    await using db = await tempDir();
    const proc = spawnTroupe(['inspect', '--db', db.path, '--port', '0', '--run', 'examples/research-crew.ts', '--run-id', 'cli1'], { TROUPE_SCRIPTED_LATENCY_MS: '0' });
    try {
      const url = /^inspector (http:\/\/127\.0\.0\.1:\d+\/)/.exec(await proc.waitFor(/^inspector http/))![1]!;
      await proc.waitFor(/^run cli1 completed$/);
      expect((await fetch(url)).status).toBe(200);
      await using client = await connect(url);
      await client.waitFor((m) => m.type === 'runs' && m.runs.some((r: { id: string }) => r.id === 'cli1'));
      client.send({ type: 'select', runId: 'cli1' });
      const run = await client.waitFor((m) => m.type === 'run');
      expect(Object.keys(run.graphs).sort()).toEqual(['crew', 'researcher', 'writer']);
      const seen = summarise(run.timeline);
      expect(seen.states.researcher?.at(-1)).toBe('done');
      expect(seen.messages).toEqual(EXPECTED_MESSAGES);
    } finally {
      proc.child.kill('SIGINT');
    }
    expect(await proc.exit).toEqual({ code: 0, signal: null });
  });
});
