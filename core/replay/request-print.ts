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

// Messages are immutable and a conversation grows by appending around the same objects (as
// core/snapshot-parts.ts relies on too), so the digest of the last conversation seen starting
// with a given message is kept: a step whose conversation extends it (the same objects in
// front, checked one by one) hashes only what it added, not the whole conversation again (a
// long run would otherwise hash O(steps²) bytes).
const lineages = new WeakMap<object, { messages: readonly Message[]; digest: string }>();
const specDigests = new WeakMap<object, Map<string, string>>();

/** Whether `messages` starts with the very objects of `prefix`. */
function extends_(messages: readonly Message[], prefix: readonly Message[]): boolean {
  for (let i = prefix.length - 1; i >= 0; i--) if (messages[i] !== prefix[i]) return false;
  return true;
}

/** The chained digest of `messages`: `h(0) = ''`, `h(i) = H(h(i-1) + canonical(message i))`. */
export function conversationDigest(messages: readonly Message[]): string {
  const first = messages[0];
  if (!first) return '';
  const known = lineages.get(first);
  let digest = '';
  let from = 0;
  if (known && known.messages.length <= messages.length && extends_(messages, known.messages)) {
    digest = known.digest;
    from = known.messages.length;
  }
  for (let i = from; i < messages.length; i++) digest = hash(`${digest}\n${canonicalJson(messages[i])}`);
  lineages.set(first, { messages, digest });
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
