import { describe, expect, it } from 'vitest';
import { readEffects } from '../examples/order-crew.js';
import { runTroupe, spawnTroupe } from './helpers/cli.js';
import { tempDir } from './helpers/temp.js';

const EXAMPLE = 'examples/order-crew.ts';

describe('CLI: approvals, history and fork', () => {
  it('re-runs a read tool killed mid-call, then lists history and forks from a checkpoint', async () => {
    await using db = await tempDir();
    await using world = await tempDir();
    const env = { TROUPE_WORLD: world.path, TROUPE_SCRIPTED_LATENCY_MS: '0', TROUPE_TOOL_LATENCY_MS: '0' };
    const proc = spawnTroupe(['run', EXAMPLE, '--db', db.path, '--run-id', 'o1'], { ...env, TROUPE_SLOW_TOOL: 'check_stock' });
    await proc.waitFor(/^slow tool check_stock started$/);
    proc.child.kill('SIGKILL');
    await proc.exit;
    // A read tool is simply re-run.
    const resumed = await runTroupe(['resume', 'o1', '--db', db.path], env);
    expect(resumed.code).toBe(0);
    expect(readEffects(world.path).filter((e) => e.kind === 'email')).toHaveLength(1);

    const history = await runTroupe(['history', 'o1', '--db', db.path, '--json']);
    const { history: entries } = JSON.parse(history.stdout) as { history: Array<{ seq: number; states: Record<string, string> }> };
    expect(entries.at(-1)!.states.crew).toBe('done');
    const at = entries.find((h) => h.states.cashier === 'planning')!.seq;
    const fork = await runTroupe(['fork', 'o1', '--at', String(at), '--run-id', 'o1-fork', '--db', db.path], env);
    expect(fork.code).toBe(0);
    expect(fork.stdout).toMatch(/^run o1-fork\n/);
    expect(fork.stdout).toMatch(/Order placed: 2 blue mugs reserved/);
    // The fork is a new run: its own payment hold and e-mail, nothing of the clerk's redone.
    expect(readEffects(world.path).filter((e) => e.kind === 'reserve')).toHaveLength(1);
    expect(readEffects(world.path).filter((e) => e.kind === 'email')).toHaveLength(2);
  });

  it('lists, approves and rejects a parked call through the CLI', async () => {
    await using db = await tempDir();
    await using world = await tempDir();
    const env = { TROUPE_WORLD: world.path, TROUPE_SCRIPTED_LATENCY_MS: '0', TROUPE_TOOL_LATENCY_MS: '0' };
    // Kill while the irreversible e-mail is in flight: its intent is on disk, its outcome unknown.
    const slow = spawnTroupe(['run', EXAMPLE, '--db', db.path, '--run-id', 'o3'], { ...env, TROUPE_SLOW_TOOL: 'send_confirmation' });
    await slow.waitFor(/^slow tool send_confirmation started$/);
    slow.child.kill('SIGKILL');
    await slow.exit;

    const parked = await runTroupe(['resume', 'o3', '--db', db.path], env);
    expect(parked.code).toBe(3);
    expect(parked.stdout).toMatch(/waiting for approval (\S+): cashier wants to run send_confirmation \(outcome-unknown\)/);
    const listed = await runTroupe(['approvals', '--db', db.path, '--json']);
    const { approvals: [approval] } = JSON.parse(listed.stdout) as { approvals: Array<{ id: string; runId: string; tool: string }> };
    expect(approval).toMatchObject({ runId: 'o3', tool: 'send_confirmation' });

    const rejected = await runTroupe(['reject', approval!.id, '--reason', 'customer called to cancel', '--db', db.path], env);
    expect(rejected.code).toBe(0);
    expect(rejected.stdout).toMatch(/completed in/);
    const again = await runTroupe(['approve', approval!.id, '--db', db.path], env);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/\[APPROVAL_DECIDED\] approval \S+ was already rejected/);
    // Nothing but the refusal: no resumed run, no output that looks as if the call ran again.
    expect(again.stdout).toBe('');
    expect((await runTroupe(['approvals', '--db', db.path])).stdout).toBe('no approvals waiting');
  });
});
