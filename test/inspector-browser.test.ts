import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createNode, memoryStorage } from '../index.js';
import { createInspector } from '../inspector/index.js';

/**
 * Drives the inspector page in a real headless Chromium (Debian's `chromium` package, driven
 * by playwright-core; no browser download). Without it the test is skipped, loudly.
 */
const CHROMIUM = '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) console.warn(`inspector-browser.test.ts: SKIPPED: ${CHROMIUM} is missing (install it with: apt-get update && apt-get install -y chromium)`);

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

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

describe('inspector page in headless Chromium', () => {
  it.skipIf(!hasChromium)('follows both agents live, moves the highlighted state, draws the messages and replays', { timeout: 25_000 }, async () => {
    const { chromium } = await import('playwright-core');
    const mod = await researchCrew();
    await using storage = memoryStorage();
    await using node = await createNode({ storage, models: mod.models, resume: false });
    await using inspector = await createInspector({ node, storage, machines: [mod.default] });
    const profile = await mkdtemp(join(tmpdir(), 'troupe-chromium-'));
    const browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS });
    try {
      const page = browser.pages()[0] ?? (await browser.newPage());
      const errors: string[] = [];
      page.on('pageerror', (error) => errors.push(error.message));
      page.on('console', (message) => message.type() === 'error' && errors.push(message.text()));
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
      await page.waitForSelector('[data-actor="writer"] g.state.current[data-state="planning"]');
      await page.waitForSelector('[data-actor="writer"][data-current-state="done"]');
      await run.result();
      await page.waitForSelector('#run-title .badge.completed');

      const shown = await page.evaluate(() => (window as unknown as { shown: string[] }).shown);
      const researcher = shown.filter((s) => s.startsWith('researcher:')).map((s) => s.slice('researcher:'.length)).filter((s, i, all) => s !== all[i - 1]);
      // From whichever step the page joined at, every later state was highlighted in order.
      const full = ['idle', 'planning', 'acting', 'planning', 'acting', 'planning', 'acting', 'planning', 'done'];
      expect(researcher.length).toBeGreaterThanOrEqual(5);
      expect(researcher).toEqual(full.slice(full.length - researcher.length));
      expect(await page.locator('[data-actor]').evaluateAll((els) => els.map((e) => e.getAttribute('data-actor')))).toEqual(['crew', 'researcher', 'writer']);
      // Exactly one highlighted state per agent, and it is the one the card names.
      expect(await page.locator('[data-actor="researcher"] g.state.current').count()).toBe(1);
      expect(await page.locator('[data-actor="researcher"] .state-name').textContent()).toBe('done');
      const messages = await page.locator('#sequence g.msg').evaluateAll((els) => els.map((e) => `${e.getAttribute('data-from')}>${e.getAttribute('data-to')}:${e.getAttribute('data-type')}`));
      expect(messages).toEqual(['crew>researcher:task', 'researcher>crew:result', 'crew>writer:task', 'writer>crew:result']);

      // Untrusted text is shown as text: no element made from it, no script run.
      expect(await page.locator('#run-detail img, #runs img').count()).toBe(0);
      expect(await page.locator('#run-detail').textContent()).toContain('<img src=x onerror="window.pwned=1">');
      expect(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned)).toBeUndefined();

      // Replay: back to the first step, then forward through the journal.
      await page.click('#first');
      await page.waitForSelector('[data-actor="researcher"][data-current-state=""]');
      const total = Number(await page.locator('#scrub').getAttribute('max'));
      await page.locator('#scrub').fill(String(Math.floor(total / 3)));
      const middle = await page.locator('[data-actor="researcher"]').getAttribute('data-current-state');
      expect(['planning', 'acting']).toContain(middle);
      await page.click('#last');
      await page.waitForSelector('[data-actor="researcher"][data-current-state="done"]');

      // A fresh page opened on the finished run replays it from the journal.
      await page.goto(`${inspector.url}#run=browser-1`);
      await page.reload();
      await page.waitForSelector('[data-actor="writer"] g.state.current[data-state="done"]');
      expect(await page.locator('#sequence g.msg').count()).toBe(4);
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
      await rm(profile, { recursive: true, force: true });
    }
  });
});
