import { createHash } from 'node:crypto';
import { decode, encode } from './codec.js';
import { layout } from './layout.js';
import type { Storage, StorageOp } from './storage.js';

/**
 * Large strings of a snapshot (message bodies, tool results) live under their own keys,
 * content-addressed (`blob:<hash>`), and the checkpoint keeps a reference. A conversation then
 * costs its full text once, not once per checkpoint: without this every checkpoint repeats
 * every message so far and storage grows with the square of the conversation.
 */

/** Strings at least this long (in UTF-16 units) are stored as blobs. */
export const BLOB_MIN_CHARS = 512;

// A key no snapshot produces by itself (XState contexts are plain JSON-like data).
const REF = '\u0000blob';

/** The key of a blob. */
export const blobKey = layout.blob;

/**
 * Replaces long strings in snapshots by references, returning the put ops of blobs not yet
 * known to be on disk. One writer per node: {@link commit} tells it which batches landed, so a
 * reference is never written without its blob being durable before or with it.
 */
export function createBlobWriter(minChars = BLOB_MIN_CHARS) {
  const durable = new Set<string>();
  // Each checkpoint sees the same long strings again; remembering their hashes avoids
  // re-hashing them, within a bound on the text kept alive for it.
  const hashes = new Map<string, string>();
  let cachedChars = 0;
  const hashOf = (text: string) => {
    let hash = hashes.get(text);
    if (!hash) {
      hash = blobHashOf(text);
      if (cachedChars + text.length > 16_000_000) {
        hashes.clear();
        cachedChars = 0;
      }
      hashes.set(text, hash);
      cachedChars += text.length;
    }
    return hash;
  };
  return {
    dehydrate(value: unknown): { value: unknown; ops: StorageOp[] } {
      const ops: StorageOp[] = [];
      const added = new Set<string>();
      const walk = (v: unknown): unknown => {
        if (typeof v === 'string') {
          if (v.length < minChars) return v;
          const hash = hashOf(v);
          // A blob still in flight in another batch is put again: puts of one content are idempotent.
          if (!durable.has(hash) && !added.has(hash)) {
            added.add(hash);
            ops.push({ type: 'put', key: blobKey(hash), value: encode(v) });
          }
          return { [REF]: hash };
        }
        if (Array.isArray(v)) return v.map(walk);
        if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
          const out: Record<string, unknown> = {};
          for (const [k, child] of Object.entries(v)) out[k] = walk(child);
          return out;
        }
        return v;
      };
      return { value: walk(value), ops };
    },
    /** Records that the batch holding `ops` is on disk. */
    commit(ops: readonly StorageOp[]): void {
      for (const op of ops) {
        const hash = layout.blobHash(op.key);
        if (hash) durable.add(hash);
      }
    },
  };
}

/** The writer type returned by {@link createBlobWriter}. */
export type BlobWriter = ReturnType<typeof createBlobWriter>;

/** Adds to `into` the hashes of the blobs a dehydrated value refers to (what an export must carry along). */
export function blobRefs(value: unknown, into: Set<string>): Set<string> {
  if (Array.isArray(value)) for (const item of value) blobRefs(item, into);
  else if (value && typeof value === 'object') {
    const ref = (value as Record<string, unknown>)[REF];
    if (typeof ref === 'string') into.add(ref);
    else for (const child of Object.values(value)) blobRefs(child, into);
  }
  return into;
}

/** The hash a blob holding `text` is stored under: what an imported blob is checked against. */
export const blobHashOf = (text: string): string => createHash('sha256').update(text).digest('hex').slice(0, 40);

/** Puts the blobs a dehydrated value refers to back in place. */
export async function hydrate(storage: Storage, value: unknown): Promise<unknown> {
  const cache = new Map<string, string>();
  const walk = async (v: unknown): Promise<unknown> => {
    if (Array.isArray(v)) return Promise.all(v.map(walk));
    if (v && typeof v === 'object') {
      const ref = (v as Record<string, unknown>)[REF];
      if (typeof ref === 'string') {
        let text = cache.get(ref);
        if (text === undefined) {
          const raw = await storage.get(blobKey(ref));
          if (!raw) throw new Error(`checkpoint refers to blob ${ref}, which is missing`);
          text = decode(raw, Infinity) as string;
          cache.set(ref, text);
        }
        return text;
      }
      const out: Record<string, unknown> = {};
      for (const [k, child] of Object.entries(v)) out[k] = await walk(child);
      return out;
    }
    return v;
  };
  return walk(value);
}
