import { createHash } from 'node:crypto';
import { canonicalJson } from '../audit-log.js';
import type { Message } from '../messages.js';
import type { ModelStep } from '../runtime.js';

/**
 * What a recording keeps of a model request, so a replay can tell whether new code asks the
 * same thing: the model it named, the tools it offered, and a digest of the conversation
 * (its messages in order), of a fixed size whatever the conversation's length. The messages
 * themselves are not stored again: they are in the agent's conversation log already, and a
 * divergence report reads them back from there (core/replay/recording.ts).
 */
export interface RequestPrint {
  /** The model reference the agent asked for (`provider:model`), before any fallback. */
  model: string;
  /** Names of the tools offered, in order. */
  tools: string[];
  /** Digest of the tools' specs (names, descriptions, input schemas) and the call settings. */
  spec: string;
  /** Number of messages sent. */
  n: number;
  /** Chained digest of the messages. */
  digest: string;
}

const hash = (text: string) => createHash('sha256').update(text).digest('base64url').slice(0, 22);

// Messages are immutable and a conversation grows by appending around the same objects, so
// the chain up to a message is computed once: a step hashes what it added, not the whole
// conversation (a long run would otherwise hash O(steps²) bytes).
const chained = new WeakMap<object, { prev: object | undefined; digest: string }>();
const specDigests = new WeakMap<object, Map<string, string>>();

/** The chained digest of `messages`: `h(i) = H(h(i-1) + canonical(message i))`. */
export function conversationDigest(messages: readonly Message[]): string {
  let digest = '';
  let prev: object | undefined;
  for (const message of messages) {
    const known = chained.get(message);
    if (known && known.prev === prev) digest = known.digest;
    else {
      digest = hash(`${digest}\n${canonicalJson(message)}`);
      chained.set(message, { prev, digest });
    }
    prev = message;
  }
  return digest;
}

/** The print of one model step (see {@link RequestPrint}). */
export function requestPrint(step: ModelStep): RequestPrint {
  const settings = step.settings ? canonicalJson(step.settings) : '';
  // An agent offers the same tools array at every step: its digest is computed once per settings.
  let bySettings = specDigests.get(step.tools);
  if (!bySettings) specDigests.set(step.tools, (bySettings = new Map()));
  let spec = bySettings.get(settings);
  if (spec === undefined) {
    spec = hash(`${canonicalJson(step.tools.map((t) => t.spec))}\n${settings}`);
    bySettings.set(settings, spec);
  }
  return { model: step.model, tools: step.tools.map((t) => t.name), spec, n: step.messages.length, digest: conversationDigest(step.messages) };
}
