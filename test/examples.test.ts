import { createServer, type AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createRunStore } from '../core/run-store.js';
import { levelStorage } from '../storage/level.js';
import { runTroupe, spawnTroupe } from './helpers/cli.js';
import { tempDir } from './helpers/temp.js';

const FAST = { TROUPE_SCRIPTED_LATENCY_MS: '0' };
const messages = (stdout: string) => stdout.split('\n').filter((l) => / → \S+ \S+$/.test(l)).map((l) => l.trim().replace(/\s+/g, ' '));

describe('example crews run offline through the CLI', () => {
  it('the demo crew (npm start) is served by the model TROUPE_MODEL names, as the README says', async () => {
    await using db = await tempDir();
    // A real provider at a closed port on loopback (one just freed): the first model call must try it.
    const port = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port: free } = server.address() as AddressInfo;
        server.close(() => resolve(free));
      });
    });
    const env = { ...FAST, TROUPE_MODEL: 'openai:gpt-test', OPENAI_BASE_URL: `http://127.0.0.1:${port}/v1`, OPENAI_API_KEY: 'test-key-not-real' };
    const proc = spawnTroupe(['run', 'examples/hierarchical-crew.ts', '--db', db.path, '--plain'], env);
    const line = await proc.waitFor(/model error:/);
    proc.child.kill('SIGKILL');
    await proc.exit;
    expect(line).toMatch(/^ {2}lead\s+model error: .*openai:gpt-test.*ECONNREFUSED 127\.0\.0\.1:\d+/);
  });

  it('hierarchical: the lead delegates, asks for a revision and approves', async () => {
    await using db = await tempDir();
    const { code, stdout } = await runTroupe(['run', 'examples/hierarchical-crew.ts', '--db', db.path], FAST);
    expect(code).toBe(0);
    expect(messages(stdout).filter((m) => m.includes('delegate') || m.startsWith('crew →'))).toEqual([
      'crew → lead task',
      'lead → crew delegate',
      'crew → researcher task',
      'crew → lead result',
      'lead → crew delegate',
      'crew → writer task',
      'crew → lead result',
      'lead → crew delegate',
      'crew → writer task',
      'crew → lead result',
    ]);
    expect(stdout).toMatch(/researcher\s+tool write_blackboard ok/);
    expect(stdout).toMatch(/writer\s+tool read_blackboard ok/);
    expect(stdout).toMatch(/\n\nApproved\. Final thesis: An agent runtime should be an actor system/);
  });

  it('handoff: triage hands the customer to billing, which refunds', async () => {
    await using db = await tempDir();
    const { code, stdout } = await runTroupe(['run', 'examples/support-handoff.ts', '--db', db.path], FAST);
    expect(code).toBe(0);
    expect(messages(stdout)).toEqual(['crew → triage task', 'triage → crew result', 'crew → billing task', 'billing → crew result']);
    expect(stdout).toMatch(/billing\s+tool refund ok/);
    expect(stdout).toMatch(/\n\nYou were charged twice for INV-12; I refunded 24\.00/);
  });

  it('group chat: speakers take turns until TERMINATE', async () => {
    await using db = await tempDir();
    const { code, stdout } = await runTroupe(['run', 'examples/design-review.ts', '--db', db.path], FAST);
    expect(code).toBe(0);
    const speakers = messages(stdout).filter((m) => m.startsWith('crew →')).map((m) => m.split(' ')[2]);
    expect(speakers).toEqual(['designer', 'critic', 'engineer', 'designer', 'critic', 'engineer']);
    expect(stdout).toMatch(/\n\nAgreed: screw-on lid, silicone seal, 350 ml\. TERMINATE\n?$/);
  });

  it('resumes the hierarchical crew SIGKILLed mid-run with its blackboard intact', async () => {
    await using db = await tempDir();
    const proc = spawnTroupe(['run', 'examples/hierarchical-crew.ts', '--db', db.path, '--run-id', 'h1'], { TROUPE_SCRIPTED_LATENCY_MS: '60' });
    await proc.waitFor(/^ {2}researcher\s+tool write_blackboard ok$/);
    proc.child.kill('SIGKILL');
    await proc.exit;
    const resumed = await runTroupe(['resume', 'h1', '--db', db.path], FAST);
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toMatch(/writer\s+tool read_blackboard ok/);
    expect(resumed.stdout).toMatch(/\n\nApproved\. Final thesis: /);
    await using storage = await levelStorage({ path: db.path });
    const last = await createRunStore(storage).latestCheckpoint('h1');
    const board = (last!.snapshot as { children: Record<string, { snapshot: { context: { entries: Record<string, { value: unknown; by: string }> } } }> }).children.blackboard!;
    expect(board.snapshot.context.entries.findings).toMatchObject({ by: 'researcher', value: ['actors own state, talk by messages', 'supervisors restart children', 'checkpoints make runs durable'] });
  });
});
