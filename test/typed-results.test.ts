import { describe, expect, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, ErrorCode, memoryStorage, scriptedModel, type ModelProvider, type ModelRequest, type RunHandle, type RunResult, type Script } from '../index.js';
import { levelStorage } from '../storage/level.js';
import { failure } from './helpers/failure.js';
import { tempDir } from './helpers/temp.js';

const Brief = z.object({ title: z.string(), score: z.number().int(), tags: z.array(z.string()).default([]) });
type Brief = z.infer<typeof Brief>;

const extractor = (extra: Partial<Parameters<typeof agent>[0]> = {}) =>
  agent({ id: 'extractor', role: 'extracts', instructions: 'Extract a brief.', model: 'scripted', output: Brief, ...extra });

/** A scripted model that also keeps every request it was sent. */
function recording(script: Script) {
  const requests: ModelRequest[] = [];
  const inner = scriptedModel({ script });
  const provider: ModelProvider = { id: 'scripted', generate: (request, context) => (requests.push(request), inner.generate(request, context)) };
  return { provider, requests };
}

describe('typed results', () => {
  it('shows the model the schema, sends invalid answers back with what is wrong, and gives run.result() the validated value', async () => {
    const { provider, requests } = recording({
      extractor: ['Sure! The title is Actors.', '{"title": "Actors", "score": "high"}', '```json\n{"title": "Actors", "score": 9, "mood": "calm"}\n```'],
    });
    await using node = await createNode({ storage: memoryStorage(), models: { scripted: provider } });
    const run = await node.run(crew({ id: 'brief', agents: [extractor()], output: Brief }), { input: 'a post about actors' });
    const result = await run.result();

    expect(result.output).toEqual({ title: 'Actors', score: 9, tags: [] });
    const system = requests[0]!.messages[0]!.content;
    expect(system).toMatch(/^Extract a brief\.\n\nYour final answer .* must be a single JSON value/);
    expect(JSON.parse(system.slice(system.indexOf('{')))).toMatchObject({ type: 'object', required: ['title', 'score'], properties: { score: { type: 'integer' } } });
    expect(requests.map((r) => r.step)).toEqual([1, 2, 3]);
    expect(requests[1]!.messages.at(-1)).toEqual({ role: 'user', content: expect.stringMatching(/^Your answer was not accepted: the answer is not JSON \(.*\)\. Reply again with only the JSON value/) });
    expect(requests[2]!.messages.at(-1)).toEqual({ role: 'user', content: expect.stringContaining('the answer does not match the schema: .score: Invalid input: expected number, received string') });
  });

  it('fails the agent, and the run, with OUTPUT_INVALID when maxSteps run out before a valid answer', async () => {
    await using node = await createNode({ storage: memoryStorage(), models: { scripted: scriptedModel({ script: { extractor: ['nope', 'still nope'] } }) } });
    const run = await node.run(crew({ id: 'brief', agents: [extractor({ maxSteps: 2 })], output: Brief }), { input: 'x' });
    const settled = await run.settled();
    expect(settled.status).toBe('failed');
    expect(settled.error).toMatchObject({ code: ErrorCode.OUTPUT_INVALID, details: { cause: { code: ErrorCode.OUTPUT_INVALID, retryable: false, details: { steps: 2 } } } });
    expect(settled.error!.message).toMatch(/extractor failed .*: agent "extractor" used its 2 steps without an answer that fits its output schema; last: the answer is not JSON/);
    const error = await failure(run.result());
    expect(error.code).toBe(ErrorCode.RUN_FAILED);
  });

  it('hands a manager the validated value of a worker with an output schema, as JSON', async () => {
    const seen: string[] = [];
    const script: Script = (request) => {
      if (request.agent === 'extractor') return '{"title": "Actors", "score": 3, "extra": true}';
      const last = request.messages.at(-1)!;
      if (last.role === 'tool') {
        seen.push(last.content);
        return 'Reviewed.';
      }
      return { toolCalls: [{ name: 'delegate', args: { agent: 'extractor', task: 'extract it' } }] };
    };
    await using node = await createNode({ storage: memoryStorage(), models: { scripted: scriptedModel({ script }) } });
    const lead = agent({ id: 'lead', role: 'leads', instructions: 'Lead.', model: 'scripted' });
    const result = await (await node.run(crew({ id: 'team', agents: [lead, extractor()], process: { type: 'hierarchical', manager: 'lead' } }), { input: 'go' })).result();
    expect(result.output).toBe('Reviewed.');
    expect(seen.map((text) => JSON.parse(text))).toEqual([{ title: 'Actors', score: 3, tags: [] }]);
  });

  it('fails a run whose final result does not fit the crew’s output schema', async () => {
    await using node = await createNode({ storage: memoryStorage(), models: { scripted: scriptedModel({ script: { writer: ['just prose'] } }) } });
    const writer = agent({ id: 'writer', role: 'writes', instructions: 'Write.', model: 'scripted' });
    const settled = await (await node.run(crew({ id: 'c', agents: [writer], output: Brief }), { input: 'x' })).settled();
    expect(settled).toMatchObject({ status: 'failed', output: '', error: { code: ErrorCode.OUTPUT_INVALID, details: { output: 'just prose' } } });
    expect(settled.error!.message).toMatch(/^crew "c": the final result does not fit its output schema: the answer is not JSON/);
  });

  it('keeps the validated result across a stop and resume on LevelDB, and after the run finished', async () => {
    await using dir = await tempDir();
    const turns = ['not yet', '{"title": "Durable", "score": 1, "tags": ["a"], "noise": 1}'];
    const script = scriptedModel({ script: { extractor: turns } });
    const brief = () => crew({ id: 'brief', agents: [extractor()], output: Brief });
    const calls: number[] = [];
    // The second step never answers on the first node: it closes while the call is in flight.
    const hanging: ModelProvider = {
      id: 'scripted',
      generate: (request, context) => {
        calls.push(request.step);
        return request.step === 2
          ? new Promise((_, reject) => context.signal.addEventListener('abort', () => reject(context.signal.reason), { once: true }))
          : script.generate(request, context);
      },
    };
    {
      await using storage = await levelStorage({ path: dir.path });
      await using node = await createNode({ storage, models: { scripted: hanging } });
      const run = await node.run(brief(), { input: 'x', runId: 'typed-1' });
      await new Promise<void>((resolve) => {
        const off = run.subscribe((e) => {
          if (e.type === 'checkpoint' && calls.length === 2) {
            off();
            resolve();
          }
        });
      });
    }
    expect(calls).toEqual([1, 2]);
    {
      await using storage = await levelStorage({ path: dir.path });
      await using node = await createNode({ storage, models: { scripted: script }, crews: [brief()] });
      const run = node.get<Brief>('typed-1');
      expect(await run!.result()).toMatchObject({ status: 'completed', output: { title: 'Durable', score: 1, tags: ['a'] } });
    }
    await using storage = await levelStorage({ path: dir.path });
    await using node = await createNode({ storage, models: { scripted: script }, crews: [brief()] });
    const finished = await node.resume('typed-1', brief());
    expect((await finished.result()).output).toEqual({ title: 'Durable', score: 1, tags: ['a'] });
    expect((await node.runs())[0]!.output).toBe('{"title":"Durable","score":1,"tags":["a"]}');
  });

  it('types run.result() by the crew’s output schema, and as text without one', async () => {
    await using node = await createNode({ storage: memoryStorage(), models: { scripted: scriptedModel({ script: { extractor: ['{"title": "T", "score": 2}'], writer: ['prose'] } }) } });
    const typed = await node.run(crew({ id: 'typed', agents: [extractor()], output: Brief }), { input: 'x' });
    const plain = await node.run(crew({ id: 'plain', agents: [agent({ id: 'writer', role: 'w', instructions: 'W.', model: 'scripted' })] }), { input: 'x' });
    expectTypeOf(typed).toEqualTypeOf<RunHandle<Brief>>();
    expectTypeOf(plain).toEqualTypeOf<RunHandle<string>>();
    const r = await typed.result();
    expectTypeOf(r).toEqualTypeOf<RunResult<Brief>>();
    expectTypeOf(r.output.score).toBeNumber();
    expectTypeOf((await plain.result()).output).toBeString();
    expect(r.output.score).toBe(2);
    expect((await plain.result()).output).toBe('prose');
  });

  it.each([
    ['a zod schema', () => extractor({ output: { type: 'object' } as never }), /agent "extractor": output must be a zod schema/],
    ['JSON values only', () => extractor({ output: z.object({ at: z.date() }) }), /agent "extractor": output must be a schema of JSON values .*Date cannot be represented/],
    ['JSON values only, for a crew too', () => crew({ id: 'c', agents: [extractor()], output: z.string().transform((s) => s.length) }), /crew "c": output must be a schema of JSON values .*Transforms cannot be represented/],
  ])('refuses an output schema that is not %s at definition', (_, define, rule) => {
    expect(define).toThrow(TypeError);
    expect(define).toThrow(rule);
  });
});
