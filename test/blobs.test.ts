import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { agent, createNode, crew, scriptedModel, tool, type RunEvent } from '../index.js';
import { createRunStore } from '../core/run-store.js';
import { prefixRange } from '../core/storage.js';
import { levelStorage } from '../storage/level.js';
import type { Script } from '../models/scripted.js';
import { tempDir } from './helpers/temp.js';

// Five tool results of 8 KB each: inline, the last checkpoints would each carry all 40 KB.
const page = (i: number) => `page ${i}: ${'lorem ipsum '.repeat(700)}`;
const fetchPage = tool({ name: 'fetch_page', description: 'fetches a long page', input: z.object({ i: z.number() }), effect: 'read', run: ({ i }) => page(i) });
const script: Script = (req) => {
  const done = req.messages.filter((m) => m.role === 'assistant').length;
  return done < 5 ? { toolCalls: [{ name: 'fetch_page', args: { i: done } }] } : `read ${done} pages`;
};
const def = crew({ id: 'reader', agents: [agent({ id: 'reader', role: 'r', instructions: 'read', model: 'scripted', tools: [fetchPage] })] });

describe('message bodies in logs, written once', () => {
  it('keeps checkpoints small while the conversation grows, and restores the bodies on resume', async () => {
    await using dir = await tempDir();
    {
      await using storage = await levelStorage({ path: dir.path });
      await using node = await createNode({ storage, models: { scripted: scriptedModel({ script }) } });
      const run = await node.run(def, { input: 'read', runId: 'b1' });
      await run.result();
    }
    await using storage = await levelStorage({ path: dir.path });
    let largest = 0;
    for (const prefix of ['ckpt:b1:', 'actor:b1:']) for await (const [, value] of storage.entries(prefixRange(prefix))) largest = Math.max(largest, value.byteLength);
    // The conversation is a log: each page is written once, in one entry.
    const third = Buffer.from(page(3));
    let copies = 0;
    for await (const [, value] of storage.entries(prefixRange('log:b1:'))) if (Buffer.from(value).includes(third)) copies += 1;
    expect(copies).toBe(1);
    // No checkpoint and no actor record holds even one whole page.
    expect(largest).toBeLessThan(page(0).length);
    const latest = await createRunStore(storage).latestCheckpoint('b1');
    const conversation = (latest!.snapshot as { children: { reader: { snapshot: { context: { conversation: Array<{ content: string }> } } } } }).children.reader.snapshot.context.conversation;
    expect(conversation.filter((m) => m.content === page(3))).toHaveLength(1);
  });

  it('resumes a run cut mid-conversation with its long messages intact', async () => {
    await using dir = await tempDir();
    {
      await using storage = await levelStorage({ path: dir.path });
      await using node = await createNode({ storage, models: { scripted: scriptedModel({ script, latencyMs: 20 }) } });
      const run = await node.run(def, { input: 'read', runId: 'b2' });
      await new Promise<void>((resolve) => run.subscribe((e: RunEvent) => e.type === 'tool.call' && e.callId.includes('/s3/') && resolve()));
    }
    const seen: number[] = [];
    const check: Script = (req, call) => {
      const pages = req.messages.filter((m) => m.role === 'tool' && m.content.startsWith('page '));
      seen.push(pages.reduce((n, m) => n + m.content.length, 0));
      return script(req, call);
    };
    await using storage = await levelStorage({ path: dir.path });
    await using node = await createNode({ storage, models: { scripted: scriptedModel({ script: check }) }, crews: [def] });
    expect((await node.get('b2')!.result()).output).toBe('read 5 pages');
    // The model saw every earlier page in full after the resume.
    expect(seen.at(-1)).toBe([0, 1, 2, 3, 4].reduce((n, i) => n + page(i).length, 0));
  });
});
