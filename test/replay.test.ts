import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createNode, crew, memoryStorage, scriptedModel, tool, type Storage } from '../index.js';
import { createRunStore } from '../core/run-store.js';
import { pairScript, twoAgentCrew } from './helpers/fixtures.js';

/** A recorded run of the pair crew in `storage` (id `rec`), and the words its tool looked up live. */
async function record(storage: Storage) {
  const looked: string[] = [];
  await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: pairScript }) } });
  const result = await (await node.run(twoAgentCrew({ calls: looked }), { input: 'brief me', runId: 'rec' })).result();
  return { looked, output: result.output };
}

/** A node on `storage` that replays: its own model must never be asked for a served call. */
async function replayer(storage: Storage) {
  const asked: string[] = [];
  const live = scriptedModel({ script: pairScript });
  const node = await createNode({ storage, resume: false, models: { scripted: { id: 'scripted', generate: (req, ctx) => (asked.push(`${req.agent}#${req.step}`), live.generate(req, ctx)) } } });
  return { node, asked };
}

describe('replay against recorded runs', () => {
  it('replays a recorded run cleanly against its own code, serving every call and running no tool', async () => {
    await using storage = memoryStorage();
    const { looked, output } = await record(storage);
    expect(looked).toEqual(['actor', 'state']);
    const before = await createRunStore(storage).journal('rec');
    const { node, asked } = await replayer(storage);
    await using _node = node;
    const replayedTools: string[] = [];
    const report = await node.replay('rec', { crew: twoAgentCrew({ calls: replayedTools }) });
    expect(report).toMatchObject({ clean: true, ended: 'finished', divergences: [], calls: { recorded: 6, served: 6, unserved: 0 } });
    expect(report.outcome).toEqual({ recorded: { status: 'completed', output }, replayed: { status: 'completed', output } });
    expect(replayedTools).toEqual([]);
    expect(asked).toEqual([]);
    // The recorded run is only read.
    expect(await createRunStore(storage).journal('rec')).toEqual(before);
  });

  it('stops at the first step whose conversation differs when a prompt changed, and names the message', async () => {
    await using storage = memoryStorage();
    await record(storage);
    const { node, asked } = await replayer(storage);
    await using _node = node;
    const report = await node.replay('rec', { crew: twoAgentCrew({ writer: { instructions: 'Write tersely.' } }) });
    expect(report.clean).toBe(false);
    expect(report.ended).toBe('diverged');
    expect(report.divergences).toEqual([
      {
        kind: 'conversation',
        agent: 'writer',
        task: 1,
        step: 1,
        callId: 'writer/t1/s1/model',
        message: 0,
        recorded: 'message 1 of 2: system: "Write."',
        requested: 'message 1 of 2: system: "Write tersely."',
      },
    ]);
    // The researcher's three calls and two lookups were served before it; nothing was asked.
    expect(report.calls).toMatchObject({ served: 5, unserved: 0 });
    expect(asked).toEqual([]);
  });

  it('diverges at the first model call when an agent is offered an added tool', async () => {
    await using storage = memoryStorage();
    await record(storage);
    const { node } = await replayer(storage);
    await using _node = node;
    const extra = tool({ name: 'search', description: 'Searches.', input: z.object({ q: z.string() }), effect: 'read', run: () => 'never' });
    const base = twoAgentCrew();
    const lookup = base.agents.find((a) => a.id === 'researcher')!.tools[0]!;
    const report = await node.replay('rec', { crew: twoAgentCrew({ researcher: { tools: [lookup, extra] } }) });
    expect(report.divergences).toEqual([
      { kind: 'tools', agent: 'researcher', task: 1, step: 1, callId: 'researcher/t1/s1/model', recorded: 'tools [lookup]', requested: 'tools [lookup, search] (adds search)' },
    ]);
    expect(report.calls.served).toBe(0);
  });

  it('diverges at the step a reordered process reaches first, with what each side sent', async () => {
    await using storage = memoryStorage();
    await record(storage);
    const { node } = await replayer(storage);
    await using _node = node;
    const { agents, ...rest } = twoAgentCrew();
    const reordered = crew({ id: rest.id, supervision: { maxRestarts: 0 }, agents: [...agents].reverse() });
    const report = await node.replay('rec', { crew: reordered });
    expect(report.divergences).toHaveLength(1);
    expect(report.divergences[0]).toMatchObject({ kind: 'conversation', agent: 'writer', task: 1, step: 1, message: 1 });
    expect(report.divergences[0]!.recorded).toContain('findings: actor, state');
    expect(report.divergences[0]!.requested).toContain('brief me');
  });

  it('goes on past a divergence on request: the changed call is asked of the model, the rest still served', async () => {
    await using storage = memoryStorage();
    const { output } = await record(storage);
    const { node, asked } = await replayer(storage);
    await using _node = node;
    const report = await node.replay('rec', { crew: twoAgentCrew({ writer: { instructions: 'Write tersely.' } }), continue: true });
    expect(report).toMatchObject({ clean: false, ended: 'finished', calls: { recorded: 6, served: 5, unserved: 1 } });
    expect(report.divergences.map((d) => [d.kind, d.callId])).toEqual([['conversation', 'writer/t1/s1/model']]);
    expect(asked).toEqual(['writer#1']);
    expect(report.outcome.replayed).toEqual({ status: 'completed', output });
  });

  it('stops when its signal aborts, reporting what it saw and nothing clean', async () => {
    await using storage = memoryStorage();
    await record(storage);
    const { node } = await replayer(storage);
    await using _node = node;
    const report = await node.replay('rec', { crew: twoAgentCrew(), signal: AbortSignal.abort() });
    expect(report).toMatchObject({ clean: false, ended: 'stopped', divergences: [] });
  });

  it('replays from a checkpoint: the recorded state there is taken, only the calls after it are compared', async () => {
    await using storage = memoryStorage();
    await record(storage);
    const { node, asked } = await replayer(storage);
    await using _node = node;
    const history = await node.history('rec');
    const at = history.find((h) => h.states.writer === 'planning')!.seq;
    const report = await node.replay('rec', { crew: twoAgentCrew(), at });
    expect(report).toMatchObject({ clean: true, ended: 'finished', from: at, calls: { recorded: 1, served: 1, unserved: 0 } });
    expect(asked).toEqual([]);
    await expect(node.replay('rec', { crew: twoAgentCrew(), at: 999 })).rejects.toThrow(/has no checkpoint 999/);
  });

  it('rehearses a new model: its answers beside the recorded ones per step, tool calls served where they match and never executed where not', async () => {
    await using storage = memoryStorage();
    const { output } = await record(storage);
    const { node, asked } = await replayer(storage);
    await using _node = node;
    const next = scriptedModel({
      id: 'next',
      script: {
        researcher: [
          { text: 'one lookup', toolCalls: [{ name: 'lookup', args: { word: 'actor' } }] },
          { text: 'and another', toolCalls: [{ name: 'lookup', args: { word: 'states' } }] },
          'findings: actor',
        ],
        writer: ['final: a brief about actors'],
      },
    });
    const looked: string[] = [];
    const report = await node.replay('rec', { crew: twoAgentCrew({ calls: looked }), rehearse: { from: 'scripted', to: 'next:v2' }, models: { next } });
    expect(asked).toEqual([]);
    expect(looked).toEqual([]);
    expect(report.ended).toBe('finished');
    expect(report.rehearsal!.map((r) => [r.callId, r.recorded?.text, r.replayed?.text])).toEqual([
      ['researcher/t1/s1/model', 'looking up actors', 'one lookup'],
      ['researcher/t1/s2/model', 'looking up states', 'and another'],
      ['researcher/t1/s3/model', 'findings: actor, state', 'findings: actor'],
      ['writer/t1/s1/model', 'final: a brief about actor and state', 'final: a brief about actors'],
    ]);
    expect(report.rehearsal![0]!.replayed).toMatchObject({ model: 'next:v2', toolCalls: ['lookup({"word":"actor"})'] });
    expect(report.rehearsal![0]!.recorded!.tokens.output).toBeGreaterThan(0);
    // The first lookup matched the recording and was served; the second asked for another word: not executed.
    expect(report.calls).toMatchObject({ served: 1, unserved: 5 });
    expect(report.divergences).toEqual([
      { kind: 'tool-call', agent: 'researcher', task: 1, step: 2, callId: 'researcher/t1/s2/tool/call_1_0', recorded: 'tool call lookup({"word":"state"})', requested: 'tool call lookup({"word":"states"})' },
      { kind: 'outcome', recorded: 'completed: "final: a brief about actor and state"', requested: 'completed: "final: a brief about actors"' },
    ]);
    expect(report.outcome).toEqual({ recorded: { status: 'completed', output }, replayed: { status: 'completed', output: 'final: a brief about actors' } });
  });
});
