import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runTroupe } from './helpers/cli.js';
import { useCleanups } from './helpers/cleanups.js';

const FAST = { TROUPE_SCRIPTED_LATENCY_MS: '0' };

describe('troupe replay', () => {
  const fixtures = useCleanups();

  it('replays a recorded run cleanly with its own code, reports a changed prompt at its step, and rehearses a new model', async () => {
    const dir = await fixtures.dir();
    const db = join(dir, 'db');
    const tools = join(dir, 'tools.log');
    const env = { ...FAST, REPLAY_TOOL_LOG: tools };
    expect((await runTroupe(['run', 'test/fixtures/replay-crew.ts', '--db', db, '--run-id', 'r1', '--plain'], env)).code).toBe(0);
    expect(await readFile(tools, 'utf8')).toBe('actor\n');

    const clean = await runTroupe(['replay', 'r1', '--crew', 'test/fixtures/replay-crew.ts', '--db', db], env);
    expect(clean.stderr).toBe('');
    expect(clean.code).toBe(0);
    expect(clean.stdout).toContain('4 of 4 recorded calls served from the recording, 0 not served; no tool was executed');
    expect(clean.stdout).toMatch(/clean: the new code asks exactly what the recording holds$/);

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
    // Three replays later, the tool ran once: in the recorded run.
    expect(await readFile(tools, 'utf8')).toBe('actor\n');

    const usage = await runTroupe(['replay', 'r1', '--crew', 'test/fixtures/replay-crew.ts', '--db', db, '--model', 'scripted'], env);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('--model takes old=new');
  });
});
