import type { SerializedError } from './errors.js';
import type { Usage } from './model.js';

/**
 * What a run reports while it works; also what `troupe run` prints. An event that has a
 * journal entry carries its journal sequence number `journalSeq`, so a reader can join the
 * journal (what happened before it looked) with the live stream without doubles.
 */
export type RunEvent = RunEventBody & { journalSeq?: number };

/**
 * The {@link RunEvent} variants, without the journal sequence number. On `model.call`,
 * `model` is the model that served the call and `requested` the one the agent asked for;
 * `ms` on `model.call`, `model.error` and `tool.call` is how long the call took; `cost` on
 * `model.call` is in US dollars, present when the provider reports it.
 */
export type RunEventBody =
  | { type: 'run.started'; runId: string; crew: string }
  | { type: 'run.resumed'; runId: string; crew: string; checkpoint: number }
  | { type: 'state'; runId: string; actor: string; state: string }
  | { type: 'message'; runId: string; from: string; to: string; messageType: string }
  | { type: 'model.call'; runId: string; actor: string; callId: string; model: string; requested?: string; usage: Usage; cost?: number; ms: number; replayed: boolean }
  | { type: 'model.token'; runId: string; actor: string; callId: string; text: string }
  | { type: 'model.error'; runId: string; actor: string; callId: string; model: string; error: SerializedError; ms?: number }
  | { type: 'tool.call'; runId: string; actor: string; callId: string; tool: string; ok: boolean; replayed: boolean; ms: number }
  | { type: 'approval.requested'; runId: string; actor: string; approvalId: string; tool: string; reason: 'outcome-unknown' | 'policy'; message: string }
  | { type: 'approval.decided'; runId: string; actor: string; approvalId: string; decision: 'approve' | 'reject' }
  | { type: 'permission'; runId: string; actor: string; callId: string; tool: string; decision: 'allow' | 'ask' | 'deny' }
  | { type: 'checkpoint'; runId: string; seq: number }
  /** The run only waits and was unloaded from memory; `wakeAt` is its earliest deadline. */
  | { type: 'run.unloaded'; runId: string; wakeAt?: number }
  /** An unloaded run was loaded again (an envelope, a decision or its deadline). */
  | { type: 'run.loaded'; runId: string }
  /** On a shared storage: this node took a run and could not serve it (left to other nodes). */
  | { type: 'run.refused'; runId: string; error: SerializedError }
  /** On a shared storage: this node lost the run's lease (another node executes it now) and stopped it. */
  | { type: 'run.lost'; runId: string }
  | { type: 'run.completed'; runId: string; output: string }
  | { type: 'run.failed'; runId: string; error: SerializedError };

/** A listener of {@link RunEvent}s. */
export type RunEventListener = (event: RunEvent) => void;

/**
 * A small fan-out of events with an async-iterator view. Listener errors are swallowed so a
 * faulty observer can never break a run.
 */
export class EventHub<T> {
  readonly #listeners = new Set<(event: T) => void>();
  #ended = false;
  readonly #onEnd = new Set<() => void>();

  emit(event: T): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // An observer's bug is not the run's failure.
      }
    }
  }

  subscribe(listener: (event: T) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** No more events will come; open iterators finish after draining. */
  end(): void {
    this.#ended = true;
    for (const fn of this.#onEnd) fn();
    this.#onEnd.clear();
  }

  /**
   * Events from this call on (the subscription starts now, not at the first `next()`),
   * buffered, until {@link end}.
   */
  iterate(signal?: AbortSignal): AsyncGenerator<T> {
    const buffer: T[] = [];
    let wake: (() => void) | undefined;
    const unsubscribe = this.subscribe((event) => {
      buffer.push(event);
      wake?.();
    });
    const onEnd = () => wake?.();
    this.#onEnd.add(onEnd);
    signal?.addEventListener('abort', onEnd, { once: true });
    const ended = () => this.#ended;
    const cleanup = () => {
      unsubscribe();
      this.#onEnd.delete(onEnd);
      signal?.removeEventListener('abort', onEnd);
    };
    return (async function* drain(): AsyncGenerator<T> {
      try {
        while (true) {
          if (buffer.length) {
            yield buffer.shift()!;
            continue;
          }
          if (ended() || signal?.aborted) return;
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
      } finally {
        cleanup();
      }
    })();
  }
}
