import { describe, expect, it } from 'vitest';
import { assign, createActor, fromPromise, setup, type AnyActor, type AnyActorRef } from 'xstate';
import { createSnapshotSplitter, reassemble, restoreWithoutWalkingLogs, type ActorRecord, type Capture, type LogRef, type PartReader } from '../core/snapshot-parts.js';

/**
 * core/snapshot-parts.ts against real XState v5 actors: a root invoking two child machines
 * whose contexts hold a growing list of message-like objects (a conversation).
 */

interface Item {
  text: string;
}
type ChildEvent = { type: 'add'; text: string } | { type: 'bump' } | { type: 'reset'; texts: string[] } | { type: 'work' } | { type: 'rest' };

// Never settles: the worker stays in flight, so its input stays in the persisted snapshot.
const worker = fromPromise<string, { items: readonly Item[] }>(() => new Promise<string>(() => {}));

const child = setup({
  types: {} as { context: { items: Item[]; count: number }; events: ChildEvent; input: { texts: string[] } },
  actors: { worker },
}).createMachine({
  id: 'child',
  context: ({ input }) => ({ items: input.texts.map((text) => ({ text })), count: 0 }),
  initial: 'idle',
  states: {
    idle: { on: { work: 'working' } },
    // The promise actor's input holds the very array of the context: one array, referenced twice.
    working: { invoke: { id: 'worker', src: 'worker', input: ({ context }) => ({ items: context.items }) }, on: { rest: 'idle' } },
  },
  on: {
    // Like `assign` on a conversation: a new array around the same element objects.
    add: { actions: assign({ items: ({ context, event }) => [...context.items, { text: event.text }] }) },
    bump: { actions: assign({ count: ({ context }) => context.count + 1 }) },
    reset: { actions: assign({ items: ({ event }) => event.texts.map((text) => ({ text })) }) },
  },
});

const root = setup({
  types: {} as { events: { type: 'next' } },
  actors: { child },
}).createMachine({
  id: 'root',
  invoke: [
    { id: 'a', systemId: 'a', src: 'child', input: { texts: ['a1', 'a2', 'a3'] } },
    { id: 'b', systemId: 'b', src: 'child', input: { texts: ['b1', 'b2', 'b3', 'b4'] } },
  ],
  initial: 'one',
  states: { one: { on: { next: 'two' } }, two: {} },
});

const ROOT = 'crew';
// Arrays of 3 or more elements become logs (both children start with one).
const MIN = 3;

/** The parts store a checkpoint writer would keep: newest record per actor, every log entry. */
function partStore() {
  const records = new Map<string, ActorRecord>();
  const logs = new Map<string, Map<number, unknown>>();
  return {
    apply(capture: Capture) {
      for (const [id, record] of capture.records) records.set(id, structuredClone(record));
      for (const { log, n, value } of capture.entries) {
        const entries = logs.get(log) ?? new Map<number, unknown>();
        expect(entries.has(n), `log ${log} entry ${n} written twice`).toBe(false);
        entries.set(n, structuredClone(value));
        logs.set(log, entries);
      }
    },
    reader: (): PartReader => ({
      actor: async (id) => records.get(id),
      log: async (ref: LogRef) =>
        [...(logs.get(ref.log) ?? new Map<number, unknown>())]
          .filter(([n]) => n >= ref.from && n < ref.to)
          .sort(([x], [y]) => x - y)
          .map(([, value]) => value),
    }),
  };
}

const childOf = (actor: AnyActor, id: string) => (actor.getSnapshot() as { children: Record<string, AnyActorRef> }).children[id]!;
const send = (actor: AnyActor, id: string, event: ChildEvent) => childOf(actor, id).send(event);
/** The log reference that stands in for an array in a record (the splitter's private key). */
const refIn = (value: unknown): LogRef => {
  const ref = Object.values(value as Record<string, LogRef>)[0];
  expect(ref).toMatchObject({ log: expect.any(String), from: expect.any(Number), to: expect.any(Number), length: expect.any(Number) });
  return ref!;
};
const itemsRef = (capture: Capture, id: string) => refIn((capture.records.get(id)!.snapshot as { context: { items: unknown } }).context.items);

function started() {
  const actor = createActor(root).start();
  return actor;
}

describe('createSnapshotSplitter', () => {
  it('the first capture writes a record for the root and every child, and each long array once as a log', () => {
    const actor = started();
    const splitter = createSnapshotSplitter({ minLogLength: MIN });
    const first = splitter.capture(actor, ROOT);
    expect([...first.records.keys()].sort()).toEqual(['a', 'b', ROOT].sort());
    expect(first.actorIds).toEqual(['a', 'b']);
    expect(first.records.get(ROOT)!.state).toBe('one');
    expect(first.records.get('a')!.state).toBe('idle');
    // The root's record lists its children without their snapshots: those are their own records.
    const rootChildren = (first.records.get(ROOT)!.snapshot as { children: Record<string, Record<string, unknown>> }).children;
    expect(rootChildren.a).toEqual({ src: 'child', systemId: 'a', syncSnapshot: false });
    expect(rootChildren.a).not.toHaveProperty('snapshot');
    // 3 + 4 elements, each written once, numbered from 1 across the run.
    expect(first.entries.map((e) => e.value)).toEqual([{ text: 'a1' }, { text: 'a2' }, { text: 'a3' }, { text: 'b1' }, { text: 'b2' }, { text: 'b3' }, { text: 'b4' }]);
    expect(first.entries.map((e) => e.n)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(first.logSeq).toBe(7);
    expect(itemsRef(first, 'a')).toMatchObject({ from: 1, to: 4, length: 3 });
    expect(itemsRef(first, 'b')).toMatchObject({ from: 4, to: 8, length: 4 });
    actor.stop();
  });

  it('after a transition only the changed actor is written, and nothing at all when nothing changed', () => {
    const actor = started();
    const splitter = createSnapshotSplitter({ minLogLength: MIN });
    splitter.capture(actor, ROOT);
    expect(splitter.capture(actor, ROOT)).toMatchObject({ records: new Map(), entries: [], logSeq: 7 });

    send(actor, 'a', { type: 'bump' });
    const bumped = splitter.capture(actor, ROOT);
    expect([...bumped.records.keys()]).toEqual(['a']);
    expect((bumped.records.get('a')!.snapshot as { context: { count: number } }).context.count).toBe(1);
    // The list did not change: the record refers to the log already written.
    expect(bumped.entries).toEqual([]);
    expect(itemsRef(bumped, 'a')).toMatchObject({ from: 1, to: 4, length: 3 });

    // A transition of the root alone writes the root alone.
    actor.send({ type: 'next' });
    const next = splitter.capture(actor, ROOT);
    expect([...next.records.keys()]).toEqual([ROOT]);
    expect(next.records.get(ROOT)!.state).toBe('two');
    expect(next.entries).toEqual([]);

    // An actor whose mailbox moved is written even though its state did not change.
    expect([...splitter.capture(actor, ROOT, new Set(['b'])).records.keys()]).toEqual(['b']);
    actor.stop();
  });

  it('appending to a logged array writes only the new entries, and the record refers to the grown range', () => {
    const actor = started();
    const splitter = createSnapshotSplitter({ minLogLength: MIN });
    splitter.capture(actor, ROOT);
    send(actor, 'b', { type: 'add', text: 'b5' });
    send(actor, 'b', { type: 'add', text: 'b6' });
    const grown = splitter.capture(actor, ROOT);
    expect([...grown.records.keys()]).toEqual(['b']);
    expect(grown.entries).toEqual([
      { log: itemsRef(grown, 'b').log, n: 8, value: { text: 'b5' } },
      { log: itemsRef(grown, 'b').log, n: 9, value: { text: 'b6' } },
    ]);
    expect(itemsRef(grown, 'b')).toMatchObject({ from: 4, to: 10, length: 6 });

    // Entries of another log in between do not break the range of this one.
    send(actor, 'a', { type: 'add', text: 'a4' });
    send(actor, 'b', { type: 'add', text: 'b7' });
    const both = splitter.capture(actor, ROOT);
    expect(both.entries.map((e) => [e.n, e.value])).toEqual([
      [10, { text: 'a4' }],
      [11, { text: 'b7' }],
    ]);
    expect(itemsRef(both, 'a')).toMatchObject({ from: 1, to: 11, length: 4 });
    expect(itemsRef(both, 'b')).toMatchObject({ from: 4, to: 12, length: 7 });
    actor.stop();
  });

  it('replacing a logged array starts a new segment after every entry so far', () => {
    const actor = started();
    const splitter = createSnapshotSplitter({ minLogLength: MIN });
    const first = splitter.capture(actor, ROOT);
    send(actor, 'a', { type: 'reset', texts: ['x1', 'x2', 'x3', 'x4'] });
    const reset = splitter.capture(actor, ROOT);
    expect([...reset.records.keys()]).toEqual(['a']);
    expect(reset.entries.map((e) => e.value)).toEqual([{ text: 'x1' }, { text: 'x2' }, { text: 'x3' }, { text: 'x4' }]);
    const ref = itemsRef(reset, 'a');
    expect(ref).toMatchObject({ log: itemsRef(first, 'a').log, from: 8, to: 12, length: 4 });
    // The new segment then grows like any other.
    send(actor, 'a', { type: 'add', text: 'x5' });
    const grown = splitter.capture(actor, ROOT);
    expect(grown.entries.map((e) => e.value)).toEqual([{ text: 'x5' }]);
    expect(itemsRef(grown, 'a')).toMatchObject({ from: 8, to: 13, length: 5 });
    // A shorter array (the same prefix objects, fewer of them) is a new array too.
    send(actor, 'a', { type: 'reset', texts: ['y1', 'y2', 'y3'] });
    expect(itemsRef(splitter.capture(actor, ROOT), 'a')).toMatchObject({ from: 13, to: 16, length: 3 });
    actor.stop();
  });
});

describe('reassemble', () => {
  it("rebuilds exactly the root's getPersistedSnapshot(), and the restored actors have the same states and contexts", async () => {
    const actor = started();
    const splitter = createSnapshotSplitter({ minLogLength: MIN });
    const parts = partStore();
    const steps: Array<() => void> = [
      () => {},
      () => send(actor, 'a', { type: 'add', text: 'a4' }),
      () => send(actor, 'b', { type: 'bump' }),
      () => actor.send({ type: 'next' }),
      () => send(actor, 'b', { type: 'reset', texts: ['z1', 'z2', 'z3', 'z4', 'z5'] }),
      () => {
        send(actor, 'a', { type: 'add', text: 'a5' });
        send(actor, 'b', { type: 'add', text: 'z6' });
        send(actor, 'b', { type: 'work' });
      },
    ];
    for (const step of steps) {
      step();
      parts.apply(splitter.capture(actor, ROOT));
      const { snapshot } = await reassemble(parts.reader(), ROOT);
      // After every capture, not just the last: the records and logs always describe the present.
      expect(snapshot).toEqual(actor.getPersistedSnapshot());
    }

    const { snapshot } = await reassemble(parts.reader(), ROOT);
    const restored = createActor(root, { snapshot: snapshot as never }).start();
    expect(restored.getSnapshot().value).toBe('two');
    for (const id of ['a', 'b']) {
      const before = childOf(actor, id).getSnapshot() as { value: unknown; context: unknown };
      const after = childOf(restored, id).getSnapshot() as { value: unknown; context: unknown };
      expect(after.value).toEqual(before.value);
      expect(after.context).toEqual(before.context);
    }
    expect(childOf(restored, 'b').getSnapshot().value).toBe('working');
    expect((childOf(restored, 'a').getSnapshot() as { context: { items: Item[] } }).context.items.map((i) => i.text)).toEqual(['a1', 'a2', 'a3', 'a4', 'a5']);
    expect(restored.getPersistedSnapshot()).toEqual(actor.getPersistedSnapshot());
    actor.stop();
    restored.stop();
  });

  it('an array referenced twice (a promise actor input holding the context array) is logged once and comes back as one array', async () => {
    const actor = started();
    send(actor, 'a', { type: 'work' });
    const live = childOf(actor, 'a').getPersistedSnapshot() as unknown as { context: { items: Item[] }; children: { worker: { snapshot: { input: { items: Item[] } } } } };
    expect(live.children.worker.snapshot.input.items).toBe(live.context.items);

    const splitter = createSnapshotSplitter({ minLogLength: MIN });
    const parts = partStore();
    const capture = splitter.capture(actor, ROOT);
    parts.apply(capture);
    const record = capture.records.get('a')!.snapshot as { context: { items: unknown }; children: { worker: { snapshot: { input: { items: unknown } } } } };
    expect(refIn(record.children.worker.snapshot.input.items)).toEqual(refIn(record.context.items));
    // a1..a3 once (and b's four), not twice.
    expect(capture.entries.filter((e) => (e.value as Item).text.startsWith('a'))).toHaveLength(3);

    const { snapshot, arrays } = await reassemble(parts.reader(), ROOT);
    const a = (snapshot as { children: { a: { snapshot: typeof live } } }).children.a.snapshot;
    expect(a.context.items).toEqual([{ text: 'a1' }, { text: 'a2' }, { text: 'a3' }]);
    expect(a.children.worker.snapshot.input.items).toBe(a.context.items);
    expect(arrays.filter(([array]) => array === a.context.items)).toHaveLength(1);
    expect(snapshot).toEqual(actor.getPersistedSnapshot());

    // A splitter seeded with the rebuilt arrays (a restored run) writes none of them again.
    const restored = createActor(root, { snapshot: snapshot as never }).start();
    const again = createSnapshotSplitter({ minLogLength: MIN, logSeq: capture.logSeq });
    again.seed(arrays);
    const after = again.capture(restored, ROOT);
    expect([...after.records.keys()].sort()).toEqual(['a', 'b', ROOT].sort());
    expect(after.entries).toEqual([]);
    expect(itemsRef(after, 'a')).toEqual(itemsRef(capture, 'a'));
    actor.stop();
    restored.stop();
  });

  it('with `defer`, a context array comes back empty and unread, as one array wherever the record refers to it', async () => {
    const actor = started();
    send(actor, 'a', { type: 'work' });
    const splitter = createSnapshotSplitter({ minLogLength: MIN });
    const parts = partStore();
    const capture = splitter.capture(actor, ROOT);
    parts.apply(capture);
    const reader = parts.reader();
    const read: string[] = [];
    const counted: PartReader = { ...reader, log: (ref) => (read.push(ref.log), reader.log(ref)) };

    const { snapshot, arrays, deferred } = await reassemble(counted, ROOT, { defer: (actorId, key) => actorId === 'a' && key === 'items' });
    type A = { context: { items: Item[] }; children: { worker: { snapshot: { input: { items: Item[] } } } } };
    const a = (snapshot as { children: { a: { snapshot: A } } }).children.a.snapshot;
    expect(deferred).toEqual([{ actorId: 'a', array: [], ref: itemsRef(capture, 'a') }]);
    expect(a.context.items).toBe(deferred[0]!.array);
    // The in-flight worker's input is the very same (empty) array: filling one fills both.
    expect(a.children.worker.snapshot.input.items).toBe(a.context.items);
    expect(arrays.some(([array]) => array === a.context.items)).toBe(true);
    // b's list is read; a's is not.
    expect(read).toEqual([itemsRef(capture, 'b').log]);

    // Filled in place after the restore, the live actor holds the whole list.
    const restored = restoreWithoutWalkingLogs(snapshot, arrays, () => createActor(root, { snapshot: snapshot as never }));
    deferred[0]!.array.push(...(await reader.log(deferred[0]!.ref)));
    restored.start();
    expect((childOf(restored, 'a').getSnapshot() as { context: { items: Item[] } }).context.items.map((i) => i.text)).toEqual(['a1', 'a2', 'a3']);
    expect(restored.getPersistedSnapshot()).toEqual(actor.getPersistedSnapshot());
    actor.stop();
    restored.stop();
  });

  it('a splitter seeded with a deferred array that was never filled starts a new segment for the next array, not an extension of it', async () => {
    const actor = started();
    const splitter = createSnapshotSplitter({ minLogLength: MIN });
    const parts = partStore();
    const capture = splitter.capture(actor, ROOT);
    parts.apply(capture);
    const { snapshot, arrays } = await reassemble(parts.reader(), ROOT, { defer: (actorId) => actorId === 'a' });
    const restored = restoreWithoutWalkingLogs(snapshot, arrays, () => createActor(root, { snapshot: snapshot as never })).start();
    const again = createSnapshotSplitter({ minLogLength: MIN, logSeq: capture.logSeq });
    again.seed(arrays);
    // Rewritten while still empty (another field changed): the record keeps the reference,
    // never the empty array it holds until it is filled.
    send(restored, 'a', { type: 'bump' });
    const bumped = again.capture(restored, ROOT);
    expect(bumped.entries).toEqual([]);
    expect(itemsRef(bumped, 'a')).toEqual(itemsRef(capture, 'a'));
    // A new task's list, built without reading the old one: every element is new, and the
    // record must not claim the old range as its front.
    send(restored, 'a', { type: 'reset', texts: ['n1', 'n2', 'n3'] });
    const after = again.capture(restored, ROOT);
    expect(after.entries.map((e) => (e.value as Item).text)).toEqual(['n1', 'n2', 'n3']);
    expect(itemsRef(after, 'a')).toMatchObject({ from: capture.logSeq + 1, to: capture.logSeq + 4, length: 3 });
    parts.apply(after);
    const rebuilt = await reassemble(parts.reader(), ROOT);
    expect((rebuilt.snapshot as { children: { a: { snapshot: { context: { items: Item[] } } } } }).children.a.snapshot.context.items.map((i) => i.text)).toEqual(['n1', 'n2', 'n3']);
    actor.stop();
    restored.stop();
  });

  it('a missing record or a log range of the wrong length is an error, not a silently different snapshot', async () => {
    const actor = started();
    const parts = partStore();
    parts.apply(createSnapshotSplitter({ minLogLength: MIN }).capture(actor, ROOT));
    const reader = parts.reader();
    await expect(reassemble({ ...reader, actor: async (id) => (id === 'b' ? undefined : reader.actor(id)) }, ROOT)).rejects.toThrow(/record of actor "b" is missing/);
    await expect(reassemble({ ...reader, log: async (ref) => (await reader.log(ref)).slice(1) }, ROOT)).rejects.toThrow(/holds 2 of the 3 entries/);
    actor.stop();
  });
});

describe('restoreWithoutWalkingLogs', () => {
  async function reassembled() {
    const actor = started();
    send(actor, 'a', { type: 'add', text: 'a4' });
    const parts = partStore();
    parts.apply(createSnapshotSplitter({ minLogLength: MIN }).capture(actor, ROOT));
    const { snapshot, arrays } = await reassemble(parts.reader(), ROOT);
    return { actor, snapshot, arrays };
  }

  it('restores real XState actors with the logged arrays in their contexts, restoring once', async () => {
    const { actor, snapshot, arrays } = await reassembled();
    expect(arrays.length).toBeGreaterThan(0);
    let restores = 0;
    const restored = restoreWithoutWalkingLogs(snapshot, arrays, () => (restores++, createActor(root, { snapshot: snapshot as never })));
    expect(restores).toBe(1);
    restored.start();
    // The live contexts hold the very arrays rebuilt from the logs.
    const items = (childOf(restored, 'a').getSnapshot() as { context: { items: Item[] } }).context.items;
    expect(arrays.some(([array]) => array === items)).toBe(true);
    expect(restored.getPersistedSnapshot()).toEqual(actor.getPersistedSnapshot());
    actor.stop();
    restored.stop();
  });

  it('restores again, with the arrays in place, when the restored actor does not keep the contexts it was given', async () => {
    const { actor, snapshot, arrays } = await reassembled();
    let restores = 0;
    // A restore that copies its input (as a future XState might): the first attempt sees the
    // contexts without their arrays and would lose the conversation.
    const restored = restoreWithoutWalkingLogs(snapshot, arrays, () => (restores++, createActor(root, { snapshot: structuredClone(snapshot) as never })));
    expect(restores).toBe(2);
    restored.start();
    expect((childOf(restored, 'a').getSnapshot() as { context: { items: Item[] } }).context.items.map((i) => i.text)).toEqual(['a1', 'a2', 'a3', 'a4']);
    actor.stop();
    restored.stop();
  });
});
