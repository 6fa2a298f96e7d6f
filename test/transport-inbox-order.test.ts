import { describe, expect, it } from 'vitest';
import { seededRandom } from '../core/clock.js';
import { decode } from '../core/codec.js';
import { ErrorCode, TroupeError } from '../core/errors.js';
import { layout } from '../core/layout.js';
import { memoryStorage } from '../storage/memory.js';
import { testEnvelope } from '../testing/transport-conformance.js';
import { createInbox, type Inbox, type InboxCursor } from '../transports/inbox.js';

/**
 * The receiver's side of the sequence protocol under what a sender and a deliverer can do,
 * chosen by a seeded generator (reproduce one with INBOX_SEED=<n>): frames of any length
 * that overlap earlier ones (resent after a reconnect) or skip seqs (aborted reservations),
 * a sender whose storage started over (a new epoch), transient and permanent refusals,
 * deliverers that take their receipt into their own batch, and receiver restarts. After
 * every frame:
 * - within one epoch of one process, delivered seqs only increase; none at or below the
 *   durable cursor is delivered again;
 * - what the receiver would acknowledge is never beyond its durable cursor;
 * - an envelope whose receipt a deliverer took with its own batch is never delivered again,
 *   restarts included.
 * And at the end, with the sender resending from what was acknowledged until all is,
 * every seq sent is delivered or dead-lettered.
 */
const SEED = Number(process.env.INBOX_SEED ?? 0x1b0c5);
const RUNS = Number(process.env.INBOX_RUNS ?? 25);
const FRAMES = 80;

async function trial(seed: number) {
  const random = seededRandom(seed);
  const storage = memoryStorage();
  // The cursor the storage holds for the current epoch (0 when it holds another epoch's or none).
  const durableSeq = async (): Promise<number> => {
    const raw = await storage.get(layout.transport.inbox('a'));
    const stored = raw ? (decode(raw) as InboxCursor) : undefined;
    return stored?.epoch === epoch ? stored.seq : 0;
  };
  let inbox: Inbox = createInbox(storage, false);
  let epoch = 'e0000000000000000';
  let sent: number[] = []; // seqs the sender numbered in this epoch (gaps are aborted ones)
  let acked = 0; // what the sender last heard acknowledged, in this epoch
  const settled = new Set<string>(); // `${epoch}:${seq}` delivered or dead-lettered
  const taken = new Set<string>(); // delivered with the deliverer's own batch holding the receipt
  let lastDelivered = 0; // in this epoch and process
  let lastDurable = 0; // the cursor this epoch had when this process read or wrote it last
  const violations: string[] = [];
  const receive = async (items: number[]) => {
    const floor = await durableSeq();
    const outcome = await inbox.receive('a', { epoch, items: items.map((seq) => ({ seq, envelope: testEnvelope(seq) })) }, {
      proceed: () => true,
      deliver: async (_envelope, _from, receipt) => {
        const key = `${epoch}:${receipt.seq}`;
        // Recorded, not thrown: the inbox takes anything `deliver` throws for a refusal.
        if (taken.has(key)) violations.push(`seed ${seed}: ${key} delivered again after its receipt was taken`);
        if (receipt.seq <= floor) violations.push(`seed ${seed}: ${key} delivered at or below the durable cursor ${floor}`);
        if (receipt.seq <= lastDelivered) violations.push(`seed ${seed}: ${key} delivered after ${lastDelivered}`);
        const roll = random();
        if (roll < 0.08) throw new Error('mailbox busy'); // transient: comes again
        lastDelivered = receipt.seq;
        if (roll < 0.14) {
          settled.add(key);
          throw new TroupeError(ErrorCode.UNKNOWN_ACTOR, 'nobody there'); // for good: a dead letter
        }
        if (roll < 0.5) {
          // The deliverer's own batch holds the envelope and its receipt, atomically.
          await storage.write(receipt.takeCursorOps());
          taken.add(key);
        }
        settled.add(key);
      },
    });
    const durable = await durableSeq();
    expect(outcome.cursor.seq, `seed ${seed}: acknowledges ${outcome.cursor.seq} beyond the durable ${durable}`).toBeLessThanOrEqual(outcome.cursor.epoch === epoch ? durable : 0);
    lastDurable = durable;
    if (outcome.cursor.epoch === epoch) acked = Math.max(acked, outcome.cursor.seq);
    expect(violations).toEqual([]);
  };
  for (let f = 0; f < FRAMES; f++) {
    const roll = random();
    if (roll < 0.05 && sent.length > 0) {
      // The sender's storage started over: a new epoch, numbering from 1.
      epoch = `e${String(f + 1).padStart(16, '0')}`;
      sent = [];
      acked = 0;
      lastDelivered = 0;
      lastDurable = 0;
    } else if (roll < 0.12) {
      // The receiver restarts: a new inbox on the same storage, its cache gone.
      inbox = createInbox(storage, false);
      lastDelivered = lastDurable;
    }
    // New seqs, some skipped (aborted reservations), then a frame of some of what is unacknowledged.
    let last = sent.at(-1) ?? 0;
    for (let k = Math.floor(random() * 6); k > 0; k--) sent.push((last += random() < 0.15 ? 2 : 1));
    // A sender sends what is not acknowledged, in order, from the oldest; when an
    // acknowledgement was lost on the way it starts further back, with seqs already delivered.
    const oldest = sent.findIndex((seq) => seq > acked);
    if (oldest === -1) continue;
    const from = random() < 0.3 ? Math.max(0, oldest - 1 - Math.floor(random() * 4)) : oldest;
    await receive(sent.slice(from, from + 1 + Math.floor(random() * 12)));
  }
  // The sender resends from what was acknowledged until everything is.
  for (let round = 0; round < 200 && sent.some((seq) => seq > acked); round++) await receive(sent.filter((seq) => seq > acked).slice(0, 50));
  for (const seq of sent) expect(settled.has(`${epoch}:${seq}`), `seed ${seed}: ${epoch}:${seq} never delivered`).toBe(true);
}

describe('the inbox delivers in order, at most once past its durable cursor, under any mix of resends, gaps, epochs, refusals and restarts', () => {
  it(`holds for ${RUNS} seeded runs of ${FRAMES} frames (seed ${SEED})`, async () => {
    for (let run = 0; run < RUNS; run++) await trial(SEED + run);
  });
});
