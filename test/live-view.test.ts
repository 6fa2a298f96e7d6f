import { describe, expect, it } from 'vitest';
import { createLiveState, createLiveView, foldEvent, renderLive } from '../cli/live-view.js';
import { createProgressPrinter } from '../cli/progress.js';
import { textWidth } from '../cli/fit-line.js';
import { manualClock } from '../core/clock.js';
import type { RunEvent } from '../core/events.js';

const R = 'r1';
const ev = {
  started: { type: 'run.started', runId: R, crew: 'team' },
  state: (actor: string, state: string) => ({ type: 'state', runId: R, actor, state }),
  model: (actor: string, ms: number, extra: { cost?: number; model?: string } = {}) => ({
    type: 'model.call', runId: R, actor, callId: `${actor}/t1/s1`, model: extra.model ?? 'scripted:default', usage: { inputTokens: 10, outputTokens: 5 }, ms, replayed: false, ...(extra.cost !== undefined ? { cost: extra.cost } : {}),
  }),
  modelError: (actor: string, message: string) => ({ type: 'model.error', runId: R, actor, callId: `${actor}/t1/s1`, model: 'scripted:default', error: { name: 'TroupeError', message }, ms: 20 }),
  tool: (actor: string, tool: string, ok = true) => ({ type: 'tool.call', runId: R, actor, callId: `${actor}/t1/s1/tool/c`, tool, ok, replayed: false, ms: 4 }),
  message: (from: string, to: string, messageType = 'task') => ({ type: 'message', runId: R, from: `${R}/${from}`, to: `${R}/${to}`, messageType }),
  completed: { type: 'run.completed', runId: R, output: 'fin' },
} satisfies Record<string, RunEvent | ((...args: never[]) => RunEvent)>;

/** A live view on a manual clock whose frames are kept, on a terminal `columns` wide. */
function harness(options: { columns?: number; crew?: string; runId?: string; tickMs?: number } = {}) {
  const clock = manualClock(10_000);
  const frames: string[] = [];
  let done = 0;
  const stream = { columns: options.columns ?? 120, isTTY: true, write: () => true } as unknown as NodeJS.WriteStream;
  const view = createLiveView(stream, { clock, color: false, frames: { draw: (f) => frames.push(f), done: () => void (done += 1) }, ...options });
  return { clock, frames, view, last: () => frames.at(-1)!, done: () => done, send: (...events: RunEvent[]) => events.forEach((e) => view.listener(e)) };
}

const widest = (frame: string) => Math.max(...frame.split('\n').map(textWidth));

describe('live view', () => {
  it('shows the run and crew at once, before the first event arrives', () => {
    const { frames } = harness({ crew: 'research-crew', runId: 'demo-1' });
    expect(frames).toHaveLength(1);
    expect(frames[0]!.split('\n')[0]).toBe('run demo-1 · crew research-crew · starting… · 0 ms');
  });

  it('names states in words, never by their machine names', () => {
    const s = createLiveState({ now: 0 });
    foldEvent(s, ev.started, 0);
    const states = ['running.active', 'planning', 'acting', 'awaitingApproval', 'recovering', 'delegating', 'running.backingOff', 'observing'];
    states.forEach((state, i) => foldEvent(s, ev.state(`agent${i}`, state), 0));
    foldEvent(s, ev.state('finished', 'done'), 0);
    foldEvent(s, ev.state('broken', 'failed'), 0);
    const text = renderLive(s, { now: 0 });
    for (const words of ['running', 'planning', 'calling tools', 'waiting for approval', 'retrying', 'waiting for a worker', 'restarting an agent', 'reading results', 'done', 'failed']) {
      expect(text).toContain(words);
    }
    for (const internal of ['running.active', 'running.backingOff', 'awaitingApproval', 'recovering', 'delegating', 'acting', 'observing']) expect(text).not.toContain(internal);
  });

  it('ticks the time a model call has been running, then shows how long it took', () => {
    const { clock, last, send } = harness();
    send(ev.started, ev.state('researcher', 'planning'));
    clock.advance(1_300);
    expect(last()).toMatch(/researcher\s+planning 1\.3 s$/m);
    clock.advance(1_000);
    expect(last()).toMatch(/researcher\s+planning 2\.3 s/);
    send(ev.model('researcher', 2_300), ev.state('researcher', 'done'));
    clock.advance(100);
    expect(last()).toMatch(/researcher\s+done\s+1 model · 0 tools · 15 tok\n\s+model scripted:default · 2\.3 s/);
    // Done is not busy: no time runs beside it.
    expect(last()).not.toMatch(/done \d/);
  });

  it('redraws on its clock only: no frame without the clock moving, none after stop', () => {
    const { clock, frames, view, send } = harness();
    send(ev.started, ev.state('a', 'planning'));
    expect(frames).toHaveLength(1);
    clock.advance(250);
    expect(frames).toHaveLength(3);
    view.stop();
    view.stop();
    expect(frames).toHaveLength(4);
    expect(clock.pending).toBe(0);
    clock.advance(1_000);
    expect(frames).toHaveLength(4);
  });

  it('ends with the run totals: steps, model calls, tool calls, tokens, cost and elapsed time', () => {
    const { clock, view, last, done, send } = harness({ columns: 80 });
    send(ev.started, ev.state('a', 'planning'), ev.modelError('a', 'HTTP 503'), ev.model('a', 40, { cost: 0.0012 }));
    send(ev.tool('a', 'search'), ev.tool('a', 'search', false), ev.model('b', 30, { cost: 0.0003 }));
    clock.advance(4_200);
    send(ev.completed);
    clock.advance(5_000);
    view.stop();
    expect(done()).toBe(1);
    const frame = last();
    expect(frame.split('\n')[0]).toBe('run r1 · crew team · completed · 4.2 s');
    expect(frame).toMatch(/ {2}totals {2}2 steps · 3 model calls \(1 failed\) · 2 tool calls\n {10}30 tokens \(20 in, 10 out\) · \$0\.0015 · 4\.2 s elapsed$/);
  });

  it('says nothing about cost when no provider reported one', () => {
    const { view, last, send } = harness();
    send(ev.started, ev.model('a', 1), ev.completed);
    view.stop();
    expect(last()).toMatch(/totals {2}1 step · 1 model call · 0 tool calls · 15 tokens \(10 in, 5 out\)\n {10}0 ms elapsed$/);
    expect(last()).not.toContain('$');
  });

  it.each([80, 52])('fits %i columns with long agent ids, tool names, arguments and text', (columns) => {
    // A slow tick: the clock jumps an hour, and every frame on the way is checked.
    const { clock, view, frames, last, send } = harness({ columns, crew: 'a-crew-with-a-very-long-name-that-goes-on-and-on-and-on', runId: `run_${'9f2c'.repeat(12)}`, tickMs: 600_000 });
    const long = 'researcher-of-extraordinarily-long-names-0123456789';
    send(
      { type: 'run.started', runId: `run_${'9f2c'.repeat(12)}`, crew: 'a-crew-with-a-very-long-name-that-goes-on-and-on-and-on' },
      ev.state(long, 'awaitingApproval'),
      ev.model(long, 123_456, { model: `openai:${'gpt-4o-mini-'.repeat(8)}`, cost: 12.5 }),
      ev.tool(long, `tool_${'x'.repeat(90)}`),
      { type: 'model.token', runId: R, actor: long, callId: 'c', text: `${'一个很长的句子 '.repeat(20)}\u001b[31mred\u001b[0m\nnext line\ttab 😀😀😀` },
      ev.message(long, `writer-${'w'.repeat(80)}`, `type-${'t'.repeat(60)}`),
      { type: 'approval.requested', runId: R, actor: long, approvalId: `approval_${'1'.repeat(40)}`, tool: `send_${'e'.repeat(50)}`, reason: 'policy', message: `wants to run with args ${JSON.stringify({ to: 'x'.repeat(200) })}` },
      ev.modelError('writer', `the server said: ${'no '.repeat(100)}`),
    );
    clock.advance(3_725_000);
    if (columns === 80) expect(last()).toMatch(/researcher-of… waiting for approval 1 h 00 min +1 model/);
    view.stop();
    for (const frame of frames) expect(widest(frame)).toBeLessThanOrEqual(columns);
    const final = frames.at(-1)!;
    // What was cut says so, and no escape sequence or line break from the text got through.
    expect(final).toContain('…');
    expect(final).not.toContain('\u001b');
    expect(final).toMatch(/researcher-of…/);
  });

  it('fits the terminal when it is narrower than 80 columns, and 80 when it is wider', () => {
    const narrow = harness({ columns: 40, crew: 'c'.repeat(100) });
    expect(widest(narrow.last())).toBe(40);
    const wide = harness({ columns: 200, crew: 'c'.repeat(100) });
    expect(widest(wide.last())).toBe(80);
  });
});

describe('progress lines off a terminal', () => {
  /** A progress printer on a manual clock, writing into `out`. */
  function printer() {
    const clock = manualClock(0);
    const out: string[] = [];
    const stream = { isTTY: false, write: (text: string) => out.push(text) } as unknown as NodeJS.WriteStream;
    return { clock, out, print: createProgressPrinter(stream, { clock }) };
  }

  it('prints no ticking, the duration when a call ends, states in words and the totals at the end', () => {
    const { clock, out, print } = printer();
    print(ev.started);
    print(ev.state('crew', 'running.active'));
    print(ev.state('a', 'acting'));
    const before = out.length;
    clock.advance(5_000);
    // Time passing alone writes nothing.
    expect(out).toHaveLength(before);
    print(ev.model('a', 1_234, { cost: 0.02 }));
    print(ev.tool('a', 'search'));
    clock.advance(1_000);
    print(ev.completed);
    expect(out.join('')).toBe(
      [
        'run r1',
        '  crew team',
        '  crew         running',
        '  a            calling tools',
        '  a            model scripted:default 10→5 tok 1234 ms',
        '  a            tool search ok',
        '  totals  1 step · 1 model call · 1 tool call · 15 tokens (10 in, 5 out) · $0.0200 · 6.0 s elapsed',
        '',
      ].join('\n'),
    );
  });
});
