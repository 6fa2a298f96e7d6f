import type { Envelope } from './envelope.js';

interface Mailbox {
  /** Sequence number of the last envelope enqueued. */
  seq: number;
  /** Sequence number of the last envelope delivered. */
  cursor: number;
  queue: Envelope[];
}

/**
 * The mailboxes of a run's actors. Each envelope gets the next sequence number of its
 * mailbox when enqueued; the cursor records what was delivered. Both go into every
 * checkpoint, so a restore redelivers exactly what was enqueued but not yet delivered.
 */
export class Mailboxes {
  readonly #boxes = new Map<string, Mailbox>();

  #box(actorId: string): Mailbox {
    let box = this.#boxes.get(actorId);
    if (!box) this.#boxes.set(actorId, (box = { seq: 0, cursor: 0, queue: [] }));
    return box;
  }

  /** Stamps `envelope` with its mailbox sequence number and queues it; returns the stamped copy. */
  enqueue(actorId: string, envelope: Envelope): Envelope {
    const box = this.#box(actorId);
    const stamped = { ...envelope, seq: ++box.seq };
    box.queue.push(stamped);
    return stamped;
  }

  /** Restores positions from a checkpoint; `pending` are envelopes enqueued but not delivered then. */
  restore(positions: { cursors: Record<string, number>; mailboxSeq: Record<string, number> }, pending: Record<string, Envelope[]>): void {
    for (const [actorId, seq] of Object.entries(positions.mailboxSeq)) {
      const cursor = positions.cursors[actorId] ?? 0;
      this.#boxes.set(actorId, { seq, cursor, queue: (pending[actorId] ?? []).filter((e) => e.seq > cursor && e.seq <= seq) });
    }
  }

  /**
   * Hands every queued envelope to `deliver`, in order per actor, advancing the cursors. The
   * mail of an actor `held` says is not ready stays queued, for a later drain.
   */
  drain(deliver: (actorId: string, envelope: Envelope) => void, held?: (actorId: string) => boolean): void {
    for (const [actorId, box] of this.#boxes) {
      if (box.queue.length > 0 && held?.(actorId)) continue;
      while (box.queue.length > 0) {
        const envelope = box.queue.shift()!;
        box.cursor = envelope.seq;
        deliver(actorId, envelope);
      }
    }
  }

  /** Current positions, for a checkpoint. */
  positions(): { cursors: Record<string, number>; mailboxSeq: Record<string, number> } {
    const cursors: Record<string, number> = {};
    const mailboxSeq: Record<string, number> = {};
    for (const [actorId, box] of this.#boxes) {
      cursors[actorId] = box.cursor;
      mailboxSeq[actorId] = box.seq;
    }
    return { cursors, mailboxSeq };
  }
}
