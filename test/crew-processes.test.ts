import { describe, expect, it } from 'vitest';
import { agent, createNode, crew, memoryStorage, scriptedModel, type CrewProcess, type RunEvent } from '../index.js';
import type { Script } from '../models/scripted.js';

const member = (id: string, extra: Parameters<typeof agent>[0] extends infer O ? Partial<O> : never = {}) =>
  agent({ id, role: id, instructions: `You are ${id}.`, model: 'scripted', retry: { initialDelayMs: 1 }, ...extra });

async function runCrew(agents: ReturnType<typeof member>[], process: CrewProcess, script: Script, input = 'go') {
  await using storage = memoryStorage();
  await using node = await createNode({ storage, models: { scripted: scriptedModel({ script }) } });
  const events: RunEvent[] = [];
  node.subscribe((e) => events.push(e));
  const run = await node.run(crew({ id: 'c', agents, process, supervision: { maxRestarts: 0 } }), { input, runId: 'p' });
  const result = await run.settled();
  const messages = events.filter((e): e is Extract<RunEvent, { type: 'message' }> => e.type === 'message').map((e) => `${e.from.split('/')[1]}>${e.to.split('/')[1]}:${e.messageType}`);
  return { result, messages, events };
}

describe('crew processes', () => {
  it('hierarchical: the manager delegates through the crew, reviews the answers and finishes', async () => {
    const script: Script = {
      lead: [
        { text: 'Research first.', toolCalls: [{ name: 'delegate', args: { agent: 'researcher', task: 'find three facts' } }] },
        { text: 'Now the draft.', toolCalls: [{ name: 'delegate', args: { agent: 'writer', task: 'write it up' } }] },
        'Approved: the brief is good.',
      ],
      researcher: ['facts: a, b, c'],
      writer: ['draft: a b c'],
    };
    const { result, messages } = await runCrew([member('lead'), member('researcher'), member('writer')], { type: 'hierarchical', manager: 'lead' }, script);
    expect(result).toMatchObject({ status: 'completed', output: 'Approved: the brief is good.' });
    expect(messages).toEqual([
      'crew>lead:task',
      'lead>crew:delegate',
      'crew>researcher:task',
      'researcher>crew:result',
      'crew>lead:result',
      'lead>crew:delegate',
      'crew>writer:task',
      'writer>crew:result',
      'crew>lead:result',
      'lead>crew:result',
    ]);
  });

  it('hierarchical: the manager sees a worker answer as the result of its delegate call', async () => {
    const seen: string[] = [];
    const script: Script = (req) => {
      if (req.agent === 'worker') return 'worked: 42';
      const last = req.messages.at(-1)!;
      if (last.role === 'tool') {
        seen.push(`${last.name}:${last.content}`);
        return 'done';
      }
      return { toolCalls: [{ name: 'delegate', args: { agent: 'worker', task: 'compute' } }] };
    };
    const { result } = await runCrew([member('boss'), member('worker')], { type: 'hierarchical', manager: 'boss' }, script);
    expect(result).toMatchObject({ status: 'completed', output: 'done' });
    expect(seen).toEqual(['delegate:worked: 42']);
  });

  it('handoff: an agent transfers control with context; the last agent answers', async () => {
    const script: Script = {
      triage: [{ text: 'This is about an invoice.', toolCalls: [{ name: 'handoff', args: { to: 'billing', context: 'invoice #12 charged twice' } }] }],
      billing: ['Refunded the duplicate charge on invoice #12.'],
      tech: [],
    };
    const received: string[] = [];
    const wrapped: Script = (req) => {
      if (req.agent === 'billing') received.push(req.messages[1]!.content);
      return (script as Record<string, string[]>)[req.agent]![req.messages.filter((m) => m.role === 'assistant').length]!;
    };
    const { result } = await runCrew([member('triage'), member('billing'), member('tech')], { type: 'handoff', entry: 'triage' }, wrapped, 'I was charged twice');
    expect(result).toMatchObject({ status: 'completed', output: 'Refunded the duplicate charge on invoice #12.' });
    expect(received).toEqual(['I was charged twice\n\nHanded off by triage: invoice #12 charged twice']);
  });

  it('handoff: stops a ping-pong with MAX_HANDOFFS', async () => {
    const bounce = (to: string) => ({ toolCalls: [{ name: 'handoff', args: { to, context: 'not mine' } }] });
    const script: Script = (req) => bounce(req.agent === 'a' ? 'b' : 'a');
    const { result } = await runCrew([member('a'), member('b')], { type: 'handoff', entry: 'a', maxHandoffs: 3 }, script);
    expect(result).toMatchObject({ status: 'failed', error: { code: 'MAX_HANDOFFS' } });
  });

  it('groupChat: round robin on a shared transcript until a speaker says TERMINATE', async () => {
    const turns: Record<string, string[]> = { designer: ['a mug with a lid', 'ok, final: steel mug'], critic: ['lids leak; use steel', 'agreed. TERMINATE'] };
    const heard: string[] = [];
    const script: Script = (req) => {
      heard.push(`${req.agent} <- ${req.messages[1]!.content.split('\n').at(-1)}`);
      return turns[req.agent]!.shift()!;
    };
    const { result } = await runCrew([member('designer'), member('critic')], { type: 'groupChat', terminateOn: 'TERMINATE', maxRounds: 10 }, script, 'design a mug');
    expect(result).toMatchObject({ status: 'completed', output: 'agreed. TERMINATE' });
    // Each speaker sees the transcript so far; the chat stops at the keyword, not at maxRounds.
    expect(heard).toEqual(['designer <- ', 'critic <- designer: a mug with a lid', 'designer <- critic: lids leak; use steel', 'critic <- designer: ok, final: steel mug']);
  });

  it('groupChat: a selector agent picks each speaker; maxRounds ends the chat', async () => {
    const script: Script = (req) => {
      if (req.agent === 'host') return req.messages[1]!.content.includes('alice: hi') ? 'bob' : 'alice';
      return req.agent === 'alice' ? 'hi' : 'hello';
    };
    const { result, messages } = await runCrew([member('host'), member('alice'), member('bob')], { type: 'groupChat', selector: { agent: 'host' }, maxRounds: 2 }, script);
    expect(result).toMatchObject({ status: 'completed', output: 'hello' });
    expect(messages.filter((m) => m.endsWith(':task')).map((m) => m.split('>')[1]!.split(':')[0])).toEqual(['host', 'alice', 'host', 'bob']);
  });
});
