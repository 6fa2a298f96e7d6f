import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runTroupe } from './helpers/cli.js';
import { useCleanups } from './helpers/cleanups.js';
import { parseRehearsal } from '../cli/replay.js';

const FAST = { TROUPE_SCRIPTED_LATENCY_MS: '0' };

describe('troupe replay', () => {
  it('takes --model as two references, old=new', () => {
    expect(parseRehearsal('openai:gpt-4o=anthropic:claude')).toEqual({ from: 'openai:gpt-4o', to: 'anthropic:claude' });
    for (const bad of ['scripted', '=next', 'scripted=', 'a=b=c']) expect(() => parseRehearsal(bad)).toThrow(/--model takes old=new/);
  });

  const fixtures = useCleanups();

  it('reports a changed prompt at its step, rehearses a new model, and replays an exported recording imported elsewhere', async () => {
    const dir = await fixtures.dir();
    const db = join(dir, 'db');
    const tools = join(dir, 'tools.log');
    const env = { ...FAST, REPLAY_TOOL_LOG: tools };
    expect((await runTroupe(['run', 'test/fixtures/replay-crew.ts', '--db', db, '--run-id', 'r1', '--plain'], env)).code).toBe(0);
    expect(await readFile(tools, 'utf8')).toBe('actor\n');

    const changed = await runTroupe(['replay', 'r1', '--crew', 'test/fixtures/replay-crew-v2.ts', '--db', db, '--json'], env);
    expect(changed.code).toBe(4);
    const { replay } = JSON.parse(changed.stdout) as { replay: Record<string, unknown> };
    expect(replay).toMatchObject({ runId: 'r1', clean: false, ended: 'diverged', calls: { recorded: 4, served: 3 } });
    expect(replay.divergences).toEqual([
      { kind: 'conversation', agent: 'writer', task: 1, step: 1, callId: 'writer/t1/s1/model', message: 0, recorded: 'message 1 of 2: system: "Write."', requested: 'message 1 of 2: system: "Write tersely."' },
    ]);

    const rehearsal = await runTroupe(['replay', 'r1', '--crew', 'test/fixtures/replay-crew.ts', '--db', db, '--model', 'scripted=next:v2'], env);
    expect(rehearsal.code).toBe(0);
    expect(rehearsal.stdout).toContain(
      [
        '  researcher task 1 step 1',
        '    recorded  scripted:default  "looking up actors" → lookup({"word":"actor"})  [5+13 tokens]',
        '    new       next:v2  "let me look" → lookup({"word":"actor"})  [5+11 tokens]',
      ].join('\n'),
    );
    expect(rehearsal.stdout).toContain('  recorded output:  "final: a brief about actors" (completed)\n  replayed output:  "final: a shorter brief" (completed)');
    // Two replays later, the tool ran once: in the recorded run.
    expect(await readFile(tools, 'utf8')).toBe('actor\n');

    // Exported, imported into a fresh database, replayed there (a second import is refused: test/recording-file.test.ts).
    const file = join(dir, 'r1.json');
    const exported = await runTroupe(['export', 'r1', '--db', db, '--out', file], env);
    expect(exported.stdout).toMatch(/^exported run r1 \(crew replay-crew, \d+ keys\) to .*r1\.json$/);
    const fresh = join(dir, 'fresh');
    expect((await runTroupe(['import', file, '--db', fresh], env)).stdout).toMatch(/^imported run r1 \(crew replay-crew, \d+ keys\) into /);
    const imported = await runTroupe(['replay', 'r1', '--crew', 'test/fixtures/replay-crew-v2.ts', '--db', fresh], env);
    expect(imported.code).toBe(4);
    expect(imported.stdout).toContain('diverged at writer, task 1 step 1 (writer/t1/s1/model): the conversation differs\n  recorded:  message 1 of 2: system: "Write."\n  new code:  message 1 of 2: system: "Write tersely."');
    expect(await readFile(tools, 'utf8')).toBe('actor\n');
  }, 120_000);
});
