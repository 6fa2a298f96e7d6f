import { afterEach, describe, expect, it, vi } from 'vitest';
import { EnvelopeSchema, encodeEnvelope, type Envelope } from '../core/envelope.js';
import { isTroupeError } from '../core/errors.js';
import { createNode } from '../core/node.js';
import type { DeliveryReceipt, TransportBindings } from '../core/transport.js';
import { memoryStorage } from '../storage/memory.js';
import { testEnvelope } from '../testing/transport-conformance.js';
import { createWsTransport } from '../transports/ws.js';
import { inProcessTransport, noCursor } from './helpers/memory-network.js';

/**
 * An envelope from a peer is validated once: by the transport, while it decodes the frame,
 * which says so in the envelope's receipt (`checkedWithin`, a bound of its wire size); the
 * node parses only what no transport vouched for, or what may exceed its own size limit.
 */

const SECRET = 'validated-once-secret-0123456789';

afterEach(() => vi.restoreAllMocks());

async function nodeWithBindings(options: { maxEnvelopeBytes?: number } = {}) {
  let bindings!: TransportBindings;
  const node = await createNode({
    nodeId: 'home',
    storage: memoryStorage(),
    ...options,
    transport: async (b) => ((bindings = b), inProcessTransport(b.nodeId)),
  });
  return { node, bindings };
}

const outcome = (delivered: Promise<void>) =>
  delivered.then(
    () => undefined,
    (e: unknown) => e,
  );

describe('the node takes a transport’s word that an envelope was checked', () => {
  it('does not parse an envelope whose receipt says it was checked, and admission still refuses what the peer may not send', async () => {
    const { node, bindings } = await nodeWithBindings();
    await using _node = node;
    const parse = vi.spyOn(EnvelopeSchema, 'safeParse');
    const checked: DeliveryReceipt = { ...noCursor(1), checkedWithin: 300 };
    const refused = await outcome(bindings.deliver(testEnvelope(1), 'peer', checked));
    expect(parse).not.toHaveBeenCalled();
    // A peer speaks for itself only: this one names a run it takes no part in.
    expect(isTroupeError(refused, 'ENVELOPE_REFUSED')).toBe(true);
  });

  it('parses an envelope no transport vouched for, and refuses a malformed one before anything else', async () => {
    const { node, bindings } = await nodeWithBindings();
    await using _node = node;
    const parse = vi.spyOn(EnvelopeSchema, 'safeParse');
    const refused = await outcome(bindings.deliver({ ...testEnvelope(1), to: '../../etc' }, 'peer', noCursor(1)));
    expect(parse).toHaveBeenCalledTimes(1);
    expect(isTroupeError(refused, 'INVALID_ENVELOPE')).toBe(true);
    expect((refused as Error).message).toMatch(/^invalid envelope: to: /);
  });

  it('still enforces a size limit smaller than the frame the envelope came in', async () => {
    const { node, bindings } = await nodeWithBindings({ maxEnvelopeBytes: 4096 });
    await using _node = node;
    const big = testEnvelope(1, { payload: 'x'.repeat(5000) });
    const refused = await outcome(bindings.deliver(big, 'peer', { ...noCursor(1), checkedWithin: 6000 }));
    expect(isTroupeError(refused, 'FRAME_TOO_LARGE')).toBe(true);
  });
});

describe('over real sockets', () => {
  it('hands each envelope over as decoded, with a receipt bounding its size by its frame', async () => {
    const got: Array<{ envelope: Envelope; receipt: DeliveryReceipt }> = [];
    await using a = await createWsTransport({ nodeId: 'a', storage: memoryStorage(), secret: SECRET, listen: { host: '127.0.0.1', port: 0 }, deliver: async () => {} });
    await using b = await createWsTransport({
      nodeId: 'b',
      storage: memoryStorage(),
      secret: SECRET,
      peers: { a: a.address!.url },
      deliver: async (envelope, _from, receipt) => void got.push({ envelope, receipt }),
    });
    const sent = Array.from({ length: 250 }, (_, i) => testEnvelope(i + 1));
    await Promise.all(sent.map((e) => a.send('b', e)));
    await a.flushed('b');
    expect(got.map((g) => g.envelope)).toEqual(sent);
    for (const { envelope, receipt } of got) {
      expect(receipt.checkedWithin).toBeGreaterThanOrEqual(encodeEnvelope(envelope).byteLength);
      expect(receipt.checkedWithin).toBeLessThanOrEqual(1024 * 1024);
    }
    expect(b.status).toBe('open');
  });
});
