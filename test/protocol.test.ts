import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { createNode, isTroupeError, memoryStorage, scriptedModel, type Envelope } from '../index.js';
import { encode } from '../core/codec.js';
import { APPROVAL_DECISION, ENVELOPE_EVENT, payloadSchemaOf, registerPayloadSchemas, SystemMessage, validatePayload } from '../core/protocol.js';
import type { TransportBindings, TransportFactory } from '../core/transport.js';
import { CREW_PAYLOAD_SCHEMAS, CrewMessage, TaskPayloadSchema } from '../actors/protocol.js';
import { createInbox } from '../transports/inbox.js';
import { pairScript, placedCrew, twoAgentCrew } from './helpers/fixtures.js';
import { inProcessTransport, memoryNetwork, noCursor } from './helpers/memory-network.js';

const root = join(import.meta.dirname, '..');
const PROTOCOL_FILES = ['actors/protocol.ts', 'core/protocol.ts'];

/** Every `.ts` source of actors/ and core/ but the two protocol files, with its text. */
async function kernelAndActorSources(): Promise<Array<{ path: string; text: string }>> {
  const out: Array<{ path: string; text: string }> = [];
  for (const dir of ['actors', 'core']) {
    for (const name of await readdir(join(root, dir))) {
      const path = `${dir}/${name}`;
      if (name.endsWith('.ts') && !PROTOCOL_FILES.includes(path)) out.push({ path, text: await readFile(join(root, path), 'utf8') });
    }
  }
  return out;
}

const envelope = (over: Partial<Envelope> & Pick<Envelope, 'type' | 'to'>): Envelope => ({ id: `bad-${over.type}`, from: 'peer/somebody', payload: {}, seq: 0, ts: 0, ...over });

/** One malformed payload per message type, addressed to run `runId`, and what the refusal names. */
const malformed = (runId: string, partRun: string): Array<[Envelope, RegExp]> => [
  [envelope({ type: CrewMessage.task, to: `${runId}/researcher`, payload: { policy: { allow: ['*'] } } }), /"task" envelope: payload\.content/],
  [envelope({ id: 'bad-task-policy', type: CrewMessage.task, to: `${runId}/researcher`, payload: { content: 'x', policy: { allow: 'fs:*' } } }), /"task" envelope: payload\.policy\.allow/],
  [envelope({ type: CrewMessage.result, to: `${runId}/crew`, corr: 'c', payload: { output: Object.assign(() => 'x', { toString: () => 'x' }) } }), /"result" envelope: payload\.output/],
  [envelope({ type: CrewMessage.failure, to: `${runId}/crew`, corr: 'c', payload: { error: 'boom' } }), /"failure" envelope: payload\.error/],
  [envelope({ type: CrewMessage.delegate, to: `${runId}/crew`, payload: { agent: 7, task: 'x' } }), /"delegate" envelope: payload\.agent/],
  [envelope({ type: CrewMessage.reset, to: `${runId}/researcher`, payload: 'now' }), /"reset" envelope: payload:/],
  [envelope({ type: APPROVAL_DECISION, to: `${runId}/researcher`, payload: { approvalId: 'a', callId: 'c', decision: { decision: 'maybe' } } }), /"approval.decision" envelope: payload\.decision\.decision/],
  [
    envelope({ type: SystemMessage.spawn, to: `${partRun}/_part.local`, payload: { crew: 'pair', version: '1', input: 'x', origin: 'peer', actors: 'writer' } }),
    /"troupe.spawn" envelope: payload\.actors/,
  ],
  [envelope({ type: SystemMessage.end, to: `${runId}/_part.local`, payload: { status: 'maybe' } }), /"troupe.end" envelope: payload\.status/],
];

/** A transport that only keeps the node's bindings, so a test can deliver as a peer would. */
function capturingTransport() {
  let bindings: TransportBindings | undefined;
  const factory: TransportFactory = async (b) => {
    bindings = b;
    return inProcessTransport(b.nodeId);
  };
  return { factory, deliver: (e: unknown, from = 'peer') => bindings!.deliver(e as Envelope, from, noCursor()) };
}

describe('the actor protocol', () => {
  it('leaves no protocol literal in actors/ and core/ outside the protocol files', async () => {
    const literals = [
      /'troupe\.envelope'/,
      /'troupe\.spawn'/,
      /'troupe\.end'/,
      /'approval\.decision'/,
      // Message types where they are sent or matched (a tool named `delegate` is not one).
      /\btype: '(task|result|failure|delegate|reset)'/,
      /\.type === '(task|result|failure|delegate|reset)'/,
      // Hand-built errors: codes come from ErrorCode.
      /\bcode: '[A-Z_]+'/,
      /\bcode === '[A-Z_]+'/,
    ];
    const hits = (await kernelAndActorSources()).flatMap(({ path, text }) =>
      text.split('\n').flatMap((line, i) => (literals.some((l) => l.test(line)) ? [`${path}:${i + 1}: ${line.trim()}`] : [])),
    );
    expect(hits).toEqual([]);
  });

  it('uses every constant outside the protocol files, and has a schema for every message type', async () => {
    const all = (await kernelAndActorSources()).map((s) => s.text).join('\n');
    const names = ['ENVELOPE_EVENT', 'APPROVAL_DECISION', 'SystemMessage.spawn', 'SystemMessage.end', ...Object.keys(CrewMessage).map((k) => `CrewMessage.${k}`)];
    expect(names.filter((n) => !all.includes(n))).toEqual([]);
    expect(ENVELOPE_EVENT).toBe('troupe.envelope');
    for (const type of [...Object.values(CrewMessage), ...Object.values(SystemMessage), APPROVAL_DECISION]) expect(payloadSchemaOf(type), type).toBeDefined();
    expect(Object.keys(CREW_PAYLOAD_SCHEMAS).sort()).toEqual(Object.values(CrewMessage).sort());
  });

  it('checks registered types only, returns the envelope as it came, and refuses a conflicting schema', () => {
    const ok = envelope({ type: CrewMessage.task, to: 'r/a', payload: { content: 'hi', extra: true } });
    expect(validatePayload(ok)).toBe(ok);
    const custom = envelope({ type: 'ping', to: 'r/a', payload: 'anything' });
    expect(validatePayload(custom)).toBe(custom);
    expect(() => registerPayloadSchemas({ [CrewMessage.task]: TaskPayloadSchema })).not.toThrow();
    expect(() => registerPayloadSchemas({ [CrewMessage.task]: z.object({}) })).toThrow(/already has a different payload schema/);
    let refusal: unknown;
    try {
      validatePayload(envelope({ type: CrewMessage.task, to: 'r/a', payload: null }));
    } catch (error) {
      refusal = error;
    }
    expect(isTroupeError(refusal, 'INVALID_ENVELOPE')).toBe(true);
    expect(refusal).toMatchObject({ details: { type: 'task', path: 'payload' } });
  });

  it('refuses a malformed payload of each type through node.deliver and node.receive; the node serves on and the run completes untouched', async () => {
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript, latencyMs: 100 }) } });
    const run = await node.run(twoAgentCrew(), { input: 'brief me', runId: 'p1' });
    const cases = malformed('p1', 'p9');
    for (const [bad, message] of cases) {
      await expect(node.deliver(bad), bad.id).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'INVALID_ENVELOPE') && message.test((e as Error).message));
    }
    // Over msgpack a function arrives as nil: still not an output.
    const [result] = cases.find(([e]) => e.type === CrewMessage.result)!;
    await expect(node.receive(encode(result))).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'INVALID_ENVELOPE') && /payload\.output/.test((e as Error).message));
    expect(run.status).toBe('running');
    expect(node.status).toBe('running');
    expect((await run.result()).output).toBe('final: a brief about actor and state');
    // Nothing of them was written: no part for the spawn, no mailbox entry, no seen id.
    expect((await node.runs()).map((r) => r.id)).toEqual(['p1']);
    const ids = cases.map(([e]) => Buffer.from(e.id));
    for await (const [key, value] of storage.entries({})) expect(ids.some((id) => Buffer.from(value).includes(id)), key).toBe(false);
  });

  it("refuses them through a transport's deliver, where the inbox dead-letters them and the pair keeps flowing", async () => {
    await using storage = memoryStorage();
    const transport = capturingTransport();
    await using node = await createNode({ storage, transport: transport.factory, crews: [twoAgentCrew()], models: { scripted: scriptedModel({ script: pairScript, latencyMs: 100 }) } });
    const run = await node.run(twoAgentCrew(), { input: 'brief me', runId: 'p2' });
    const cases = malformed('p2', 'p8');
    for (const [bad, message] of cases) {
      await expect(Promise.resolve().then(() => transport.deliver(bad)), bad.id).rejects.toSatisfy(
        (e: unknown) => isTroupeError(e, 'INVALID_ENVELOPE') && message.test((e as Error).message),
      );
    }
    // A transport's inbox treats the refusal as final: dead letters, the cursor moves past them.
    const dead: string[] = [];
    const inbox = createInbox(storage, false);
    const outcome = await inbox.receive('peer', { epoch: 'e1', items: cases.map(([e], i) => ({ seq: i + 1, envelope: e })) }, {
      deliver: (e, from) => transport.deliver(e, from),
      onDeadLetter: (e) => dead.push(e.id),
      proceed: () => true,
    });
    expect(outcome).toMatchObject({ delivered: 0, deadLetters: cases.length, cursor: { seq: cases.length } });
    expect(outcome.failure).toBeUndefined();
    expect(dead).toEqual(cases.map(([e]) => e.id));
    expect(node.status).toBe('running');
    expect((await run.result()).output).toBe('final: a brief about actor and state');
    expect((await node.runs()).map((r) => r.id)).toEqual(['p2']);
  });

  it('runs a crew across two nodes while a peer sends malformed crew messages in between', async () => {
    const net = memoryNetwork();
    const seen = new Map<string, TransportBindings>();
    const spying: TransportFactory = async (bindings) => {
      seen.set(bindings.nodeId, bindings);
      return net.transport(bindings);
    };
    await using sa = memoryStorage();
    await using sb = memoryStorage();
    await using b = await createNode({ nodeId: 'b', storage: sb, transport: spying, crews: [placedCrew()], models: { scripted: scriptedModel({ script: pairScript, latencyMs: 50 }) } });
    await using a = await createNode({ nodeId: 'a', storage: sa, transport: spying, crews: [placedCrew()], models: { scripted: scriptedModel({ script: pairScript }) } });
    const started = new Promise<void>((resolve) => b.subscribe((e) => e.type === 'run.started' && e.runId === 'x1' && resolve()));
    const partDone = new Promise<void>((resolve) => b.subscribe((e) => e.type === 'run.completed' && e.runId === 'x1' && resolve()));
    const run = await a.run(placedCrew(), { input: 'brief me', runId: 'x1' });
    await started;
    // As if node a sent them: a task without content for the writer, a result of no string for the crew.
    const toWriter = envelope({ id: 'bad-1', from: 'x1/crew', to: 'x1/writer', type: CrewMessage.task, payload: { content: 42 }, corr: 'c', replyTo: 'x1/crew' });
    const toCrew = envelope({ id: 'bad-2', from: 'x1/writer', to: 'x1/crew', type: CrewMessage.result, payload: { output: { nested: true } }, corr: 'c' });
    await expect(Promise.resolve().then(() => seen.get('b')!.deliver(toWriter, 'a', noCursor()))).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'INVALID_ENVELOPE'));
    await expect(Promise.resolve().then(() => seen.get('a')!.deliver(toCrew, 'b', noCursor()))).rejects.toSatisfy((e: unknown) => isTroupeError(e, 'INVALID_ENVELOPE'));
    expect((await run.result()).output).toBe('final: a brief about actor and state');
    await partDone;
    // The network records a delivery once `deliver` resolved, which may be after the part's end event.
    await vi.waitFor(() => expect(net.delivered.map((d) => `${d.from}>${d.to}:${d.type}`)).toEqual(['a>b:troupe.spawn', 'a>b:task', 'b>a:result', 'a>b:troupe.end']));
    expect([a.status, b.status]).toEqual(['running', 'running']);
  });
});
