import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRunStore } from '../core/run-store.js';
import { agent, createNode, crew, memoryStorage, scriptedModel, staticSecrets, type ModelProvider } from '../index.js';
import { createInspector } from '../inspector/index.js';
import approvalCrew, { models as approvalModels, PUBLISHED } from './fixtures/approval-crew.js';
import { levelStorage } from '../storage/level.js';
import { useCleanups } from './helpers/cleanups.js';
import { lookupTool } from './helpers/lookup-tool.js';

/**
 * Drives the inspector page in a real headless Chromium (Debian's `chromium` package, driven
 * by playwright-core; no browser download), one launch for the whole file. Without it the
 * tests are skipped, loudly. No screenshots are taken.
 */
const CHROMIUM = '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) console.warn(`inspector-browser.test.ts: SKIPPED: ${CHROMIUM} is missing (install it with: apt-get update && apt-get install -y chromium)`);

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const { defer, dir, spawn } = useCleanups();

let browser: BrowserContext | undefined;
let profile: string | undefined;

beforeAll(async () => {
  if (!hasChromium) return;
  const { chromium } = await import('playwright-core');
  profile = await mkdtemp(join(tmpdir(), 'troupe-chromium-'));
  browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS });
}, 30_000);

afterAll(async () => {
  await browser?.close();
  if (profile) await rm(profile, { recursive: true, force: true });
});

/** A fresh page whose errors and received WebSocket frames are collected. */
async function openPage(): Promise<{ page: Page; errors: string[]; frames: string[] }> {
  const page = await browser!.newPage();
  defer(() => page.close());
  const errors: string[] = [];
  const frames: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  page.on('console', (message) => message.type() === 'error' && errors.push(message.text()));
  page.on('websocket', (ws) => ws.on('framereceived', (frame) => frames.push(String(frame.payload))));
  return { page, errors, frames };
}

/** The research demo crew, with model latency long enough to watch each step. */
async function researchCrew() {
  const previous = process.env.TROUPE_SCRIPTED_LATENCY_MS;
  process.env.TROUPE_SCRIPTED_LATENCY_MS = '250';
  try {
    return await import('../examples/research-crew.js');
  } finally {
    if (previous === undefined) delete process.env.TROUPE_SCRIPTED_LATENCY_MS;
    else process.env.TROUPE_SCRIPTED_LATENCY_MS = previous;
  }
}

/**
 * `provider` with the first call of each of `agents` held until the test lets it go: that
 * agent stays in `planning` until the page has shown it, however slow the machine. (The
 * scripted latency alone let a loaded CI machine's browser miss the writer's planning.)
 */
function holdingFirstCalls(provider: ModelProvider, agents: readonly string[]) {
  const opened = new Map<string, () => void>();
  const gates = new Map(agents.map((a) => [a, new Promise<void>((resolve) => opened.set(a, resolve))]));
  const held: ModelProvider = {
    id: provider.id,
    async generate(request, context) {
      const gate = gates.get(request.agent);
      gates.delete(request.agent); // only the first call waits
      await gate;
      return provider.generate(request, context);
    },
  };
  return { provider: held, release: (agent: string) => opened.get(agent)!() };
}

const PLANTED = 'sk-planted-7c1e9a44d2b04f6e';
const APPROVAL_CREW = 'test/fixtures/approval-crew.ts';

/**
 * One agent that looks something up with a tool holding a secret (whose result echoes it
 * back, plus a long text), writes a finding to the blackboard, and answers. Its model
 * reports a cost, so the page has money to add up.
 */
function stepCrew() {
  const lookup = lookupTool(`${'actors keep state private; '.repeat(120)}END-OF-NOTES`);
  const scripted = scriptedModel({
    script: {
      scout: [
        { text: 'Looking it up.', toolCalls: [{ name: 'lookup', args: { query: 'actor isolation' } }] },
        { text: 'Noting it.', toolCalls: [{ name: 'write_blackboard', args: { key: 'finding', value: 'actors are isolated' } }] },
        'Actors are isolated.',
      ],
    },
  });
  const priced: ModelProvider = { id: 'scripted', generate: async (request, context) => ({ ...(await scripted.generate(request, context)), cost: 0.02 }) };
  const definition = crew({
    id: 'step-crew',
    blackboard: true,
    agents: [agent({ id: 'scout', role: 'looks things up', instructions: 'Look it up.', model: 'scripted', tools: [lookup] })],
  });
  return { definition, models: { scripted: priced } };
}

async function act(url: string, body: unknown, headers: Record<string, string>) {
  const response = await fetch(new URL('/action', url), { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: response.status, body: (await response.json()) as { ok: boolean; error?: { code: string } } };
}

describe.skipIf(!hasChromium)('inspector page in headless Chromium', () => {
  it('follows both agents live, draws nested states inside their box with labelled transitions, and replays', { timeout: 45_000 }, async () => {
    const mod = await researchCrew();
    await using storage = memoryStorage();
    const router = holdingFirstCalls(mod.models.router, ['researcher', 'writer']);
    await using node = await createNode({ storage, models: { ...mod.models, router: router.provider }, resume: false });
    await using inspector = await createInspector({ node, storage, machines: [mod.default] });
    const { page, errors } = await openPage();
    await page.goto(inspector.url);
    await page.waitForSelector('#conn[data-status="open"]');
    // Every highlighted state the page ever shows, in order (a state can last a millisecond).
    await page.evaluate(() => {
      const w = window as unknown as { shown: string[] };
      w.shown = [];
      new MutationObserver((records) => {
        for (const r of records) {
          const el = r.target as Element;
          w.shown.push(`${el.getAttribute('data-actor')}:${el.getAttribute('data-current-state')}`);
        }
      }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ['data-current-state'] });
    });

    const hostile = 'Brief on actors <img src=x onerror="window.pwned=1"> \u0007\u001b[2J';
    const run = await node.run(mod.default, { input: hostile, runId: 'browser-1' });
    // The page follows the new live run by itself.
    await page.waitForSelector('[data-run="browser-1"][aria-current="true"]');
    await page.waitForSelector('[data-actor="researcher"] g.state.current[data-state="planning"]');
    // The agent at work is the first card, above the crew's.
    await page.waitForSelector('#actors > section:first-child[data-actor="researcher"][data-working="true"]');
    router.release('researcher');
    await page.waitForSelector('[data-actor="writer"] g.state.current[data-state="planning"]');
    router.release('writer');
    await page.waitForSelector('[data-actor="writer"][data-current-state="done"]');
    await run.result();
    await page.waitForSelector('#run-title .badge.completed');

    const shown = await page.evaluate(() => (window as unknown as { shown: string[] }).shown);
    const researcher = shown.filter((s) => s.startsWith('researcher:')).map((s) => s.slice('researcher:'.length)).filter((s, i, all) => s !== all[i - 1]);
    // From whichever step the page joined at, every later state was highlighted in order.
    const full = ['idle', 'planning', 'acting', 'planning', 'acting', 'planning', 'acting', 'planning', 'done'];
    expect(researcher.length).toBeGreaterThanOrEqual(5);
    expect(researcher).toEqual(full.slice(full.length - researcher.length));
    // Nobody works any more: the cards are back in the crew's own order.
    expect(await page.locator('[data-actor]').evaluateAll((els) => els.filter((e) => e.tagName === 'SECTION').map((e) => e.getAttribute('data-actor')))).toEqual(['crew', 'researcher', 'writer']);
    expect(await page.locator('[data-actor="researcher"] g.state.current').count()).toBe(1);
    expect(await page.locator('[data-actor="researcher"] .state-name').textContent()).toBe('done');
    const messages = await page.locator('#sequence g.msg').evaluateAll((els) => els.map((e) => `${e.getAttribute('data-from')}>${e.getAttribute('data-to')}:${e.getAttribute('data-type')}`));
    expect(messages).toEqual(['crew>researcher:task', 'researcher>crew:result', 'crew>writer:task', 'writer>crew:result']);

    // The crew's `running.active` is drawn inside `running`: in the DOM and on the screen.
    const crewCard = page.locator('section[data-actor="crew"]');
    expect(await crewCard.locator('g.state[data-state="running"] > g.state[data-state="running.active"]').count()).toBe(1);
    const outer = (await crewCard.locator('g.state[data-state="running"] > rect').boundingBox())!;
    const inner = (await crewCard.locator('g.state[data-state="running.active"] > rect').boundingBox())!;
    expect(inner.x > outer.x && inner.y > outer.y && inner.x + inner.width < outer.x + outer.width && inner.y + inner.height < outer.y + outer.height).toBe(true);
    // Transitions carry their events (and guards) as labels.
    const labels = await page.locator('section[data-actor="researcher"] text.edge-label').allTextContents();
    expect(labels).toEqual(expect.arrayContaining(['envelope [isTask]', 'model done [wantsTools]']));
    // Time spent in each state, per agent.
    expect(await page.locator('section[data-actor="researcher"] [data-time-in="planning"]').count()).toBe(1);

    // Untrusted text is shown as text: no element made from it, no script run.
    expect(await page.locator('#run-detail img, #runs img').count()).toBe(0);
    expect(await page.locator('#run-detail').textContent()).toContain('<img src=x onerror="window.pwned=1">');
    expect(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned)).toBeUndefined();

    // Replay: back to the first step, then forward through the journal.
    await page.click('#first');
    await page.waitForSelector('[data-actor="researcher"][data-current-state=""]');
    const total = Number(await page.locator('#scrub').getAttribute('max'));
    await page.locator('#scrub').fill(String(Math.floor(total / 3)));
    const middle = await page.locator('section[data-actor="researcher"]').getAttribute('data-current-state');
    expect(['planning', 'acting']).toContain(middle);
    await page.click('#last');
    await page.waitForSelector('[data-actor="researcher"][data-current-state="done"]');

    // A fresh page opened on the finished run replays it from the journal.
    await page.goto(`${inspector.url}#run=browser-1`);
    await page.reload();
    await page.waitForSelector('[data-actor="writer"] g.state.current[data-state="done"]');
    expect(await page.locator('#sequence g.msg').count()).toBe(4);
    expect(errors).toEqual([]);
  });

  it('shows a step: the tool call with its arguments and result, the reply, the blackboard, costs; never the secret', { timeout: 45_000 }, async () => {
    const { definition, models } = stepCrew();
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models, resume: false, secrets: staticSecrets({ PLANTED }) });
    await (await node.run(definition, { input: 'is an actor isolated?', runId: 'steps-1' })).result();
    await using inspector = await createInspector({ node, storage, machines: [definition] });
    const { page, errors, frames } = await openPage();
    // The landing page selects a run by itself.
    await page.goto(inspector.url);
    await page.waitForSelector('[data-run="steps-1"][aria-current="true"]');
    await page.waitForSelector('#run-title .badge.completed');

    await page.locator('#log li[data-kind="call"]', { hasText: 'tool lookup' }).click();
    const call = page.locator('#step .call[data-call="tool"]');
    await call.waitFor();
    expect(await call.locator('h4').textContent()).toContain('lookup');
    const args = await call.locator('pre[data-path="call.args"]').textContent();
    expect(JSON.parse(args!)).toEqual({ query: 'actor isolation' });
    const result = call.locator('pre[data-path="call.result"]');
    expect(await result.textContent()).toContain('"echoedToken": "[redacted]"');
    // The long result is a preview; the whole text comes on demand.
    expect(await result.getAttribute('data-cut')).toBe('true');
    expect(await result.textContent()).not.toContain('END-OF-NOTES');
    await call.locator('button.more').first().click();
    await page.waitForSelector('#step pre[data-path="call.result"][data-cut="false"]');
    expect(await result.textContent()).toContain('END-OF-NOTES');
    // The agent's messages at that step, the model's reply asking for the tool among them.
    expect(await page.locator('#step .conversation .message[data-role="assistant"]').first().textContent()).toContain('Looking it up.');

    // The model call of the last step: its reply; the blackboard as that checkpoint holds it.
    await page.locator('#log li[data-kind="call"]', { hasText: 'model' }).first().click();
    await page.waitForSelector('#step .call[data-call="model"]');
    expect(await page.locator('#step pre[data-path="call.result"]').textContent()).toBe('Actors are isolated.');
    expect(await page.locator('#step .blackboard pre').textContent()).toContain('actors are isolated');

    // Tokens and cost, for the run and for the agent.
    expect(await page.locator('#totals').textContent()).toContain('$0.060');
    expect(Number(await page.locator('#totals').getAttribute('data-tokens'))).toBeGreaterThan(0);
    expect(await page.locator('section[data-actor="scout"] .totals').textContent()).toContain('$0.060');

    // The planted secret never reached the page: not in its DOM, not in any frame it received.
    expect(await page.evaluate(() => document.documentElement.outerHTML)).not.toContain(PLANTED);
    expect(frames.length).toBeGreaterThan(3);
    expect(frames.join('\n')).not.toContain(PLANTED);
    expect(errors).toEqual([]);

    // Time travel: checkpoint 2 shows the crew as it was, and a fork starts from it.
    await page.click('#checkpoints button[data-checkpoint="2"]');
    await page.waitForSelector('#fork-box:not([hidden])');
    const forkedAt = await page.locator('section[data-actor="scout"]').getAttribute('data-current-state');
    expect(forkedAt).not.toBe('done');
    // Without the token the page is refused and nothing is forked.
    await page.click('#fork');
    await page.waitForFunction(() => document.getElementById('notice')!.textContent!.includes('token'));
    expect((await node.runs()).map((r) => r.id)).toEqual(['steps-1']);
    await page.fill('#token', inspector.token);
    await page.dispatchEvent('#token', 'change');
    await page.click('#fork');
    // The page switches to the new run, which says where it came from.
    await page.waitForSelector('#runs button[aria-current="true"]:not([data-run="steps-1"])');
    const forkId = (await page.locator('#runs button[aria-current="true"]').getAttribute('data-run'))!;
    await page.waitForFunction(() => document.getElementById('run-detail')!.textContent!.includes('forked from steps-1 at checkpoint 2'));
    const fork = await createRunStore(storage).getRun(forkId);
    expect(fork?.forkedFrom).toEqual({ runId: 'steps-1', checkpoint: 2 });
    await node.get(forkId)?.settled();
    await page.waitForSelector('#run-title .badge.completed');
    expect(errors).toEqual([]);
  });

  it('decides a waiting approval from the page with edited arguments; without the token or from elsewhere it is refused', { timeout: 45_000 }, async () => {
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: approvalModels, resume: false });
    const run = await node.run(approvalCrew, { input: 'Publish "hello world".', runId: 'waits-1' });
    await using inspector = await createInspector({ node, storage, machines: [approvalCrew] });
    const { page, errors } = await openPage();
    await page.goto(`${inspector.url}#run=waits-1&token=${inspector.token}`);
    // The token is kept for the tab, not left in the address bar.
    await page.waitForFunction(() => !location.hash.includes('token'));
    const approval = page.locator('#approvals section[data-tool="publish"]');
    await approval.waitFor();
    const [pending] = await node.approvals({ status: 'pending', runId: 'waits-1' });
    expect(await approval.textContent()).toContain(`id ${pending!.id}`);
    expect(await approval.textContent()).toContain('reason policy');
    expect(JSON.parse((await approval.locator('pre').textContent())!)).toEqual({ text: 'hello world' });

    // Refused: no token, a wrong token, another origin, a form's content type. Nothing decided.
    const body = { action: 'approve', approvalId: pending!.id };
    expect((await act(inspector.url, body, {})).status).toBe(401);
    expect((await act(inspector.url, body, { authorization: 'Bearer not-the-token' })).status).toBe(401);
    expect((await act(inspector.url, body, { authorization: `Bearer ${inspector.token}`, origin: 'http://evil.example' })).status).toBe(403);
    expect((await act(inspector.url, body, { authorization: `Bearer ${inspector.token}`, 'content-type': 'text/plain' })).status).toBe(415);
    // A page of another origin in the same browser, holding the token, cannot post to it either: no CORS is granted.
    const other = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>elsewhere</title>'));
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    defer(async () => {
      other.closeAllConnections();
      await new Promise((resolve) => other.close(resolve));
    });
    const elsewhere = await browser!.newPage();
    defer(() => elsewhere.close());
    await elsewhere.goto(`http://127.0.0.1:${(other.address() as AddressInfo).port}/`);
    const answer = await elsewhere.evaluate(
      ([url, token, approvalId]) =>
        fetch(url!, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify({ action: 'approve', approvalId }) }).then(
          (r) => `status ${r.status}`,
          (e: Error) => e.name,
        ),
      [new URL('/action', inspector.url).href, inspector.token, pending!.id],
    );
    expect(answer).toBe('TypeError');
    expect((await node.approvals({ status: 'pending', runId: 'waits-1' })).map((a) => a.id)).toEqual([pending!.id]);

    // Edit the arguments, approve: the run completes, with the edited call.
    await approval.locator('button[data-act="edit"]').click();
    await approval.locator('textarea').fill('{"text":"hello edited"}');
    await approval.locator('button[data-act="approve"]').click();
    expect((await run.result()).output).toBe(PUBLISHED);
    await page.waitForSelector('#run-title .badge.completed');
    await page.waitForFunction(() => document.querySelectorAll('#approvals section').length === 0);
    const decided = (await node.approvals({ runId: 'waits-1' }))[0]!;
    expect(decided.status).toBe('approved');
    expect(decided.decision).toMatchObject({ decision: 'approve', args: { text: 'hello edited' } });
    expect(errors).toEqual([]);
  });

  it('attaches to a run another process hosts, follows its states, and approves it from the page through `troupe inspect`', { timeout: 40_000 }, async () => {
    // A run parked on its approval, left in the database by a node that closed.
    const db = join(await dir(), 'db');
    {
      await using storage = await levelStorage({ path: db, create: true });
      await using node = await createNode({ storage, models: approvalModels, resume: false });
      const run = await node.run(approvalCrew, { input: 'Publish "hello world".', runId: 'elsewhere-1', source: APPROVAL_CREW });
      for await (const event of run.events()) if (event.type === 'approval.requested') break;
    }
    // Another process hosts it (and holds the database); `troupe inspect` reads it through that process's control socket.
    const host = spawn(['node', '--db', db, '--listen', '127.0.0.1:0', '--crew', APPROVAL_CREW], { TROUPE_SECRET: 'a-test-secret-of-some-length' });
    await host.waitFor(/^node \S+ ready/);
    const inspect = spawn(['inspect', '--db', db, '--port', '0']);
    const url = /^inspector (http:\/\/127\.0\.0\.1:\d+\/)/.exec(await inspect.waitFor(/^inspector http/))![1]!;
    const token = /^token (\S+)/.exec(await inspect.waitFor(/^token /))![1]!;

    const { page, errors } = await openPage();
    await page.goto(`${url}#token=${token}`);
    // The landing page picks the run that is going, drawn as it waits.
    await page.waitForSelector('[data-run="elsewhere-1"][aria-current="true"]');
    await page.waitForSelector('section[data-actor="publisher"] g.state.current[data-state="awaitingApproval"]');
    const approval = page.locator('#approvals section[data-tool="publish"]');
    await approval.locator('button[data-act="approve"]').click();
    // The decision went to the hosting process, which ran the call; the page follows its states there.
    await page.waitForSelector('section[data-actor="publisher"] g.state.current[data-state="done"]');
    await page.waitForSelector('#run-title .badge.completed');
    expect(await page.locator('#run-detail').textContent()).toContain(PUBLISHED);
    expect(host.stderr()).toBe('');
    expect(errors).toEqual([]);
  });
});
