import { afterEach, describe, expect, it, vi } from 'vitest';
import { checkEnvelope, EnvelopeSchema, vouchEnvelope, type Envelope } from '../core/envelope.js';
import { isTroupeError } from '../core/errors.js';
import { decodeFrame, encodeBatch } from '../transports/frames.js';
import { encodeEnvelope } from '../core/envelope.js';
import { testEnvelope } from '../testing/transport-conformance.js';
import { createNode } from '../core/node.js';
import { memoryStorage } from '../storage/memory.js';
import type { TransportBindings } from '../core/transport.js';
import { inProcessTransport, noCursor } from './helpers/memory-network.js';

const EPOCH = 'ab'.repeat(16);

afterEach(() => vi.restoreAllMocks());

describe('an envelope is validated once on the receive path', () => {
  it('takes the envelopes of a decoded frame without parsing them again', () => {
    const frame = decodeFrame(encodeBatch(EPOCH, [1, 2, 3].map((seq) => ({ seq, bytes: encodeEnvelope(testEnvelope(seq)) }))), 1024 * 1024);
    if (frame.t !== 'batch') throw new Error('expected a batch');
    const parse = vi.spyOn(EnvelopeSchema, 'safeParse');
    for (const item of frame.items) expect(checkEnvelope(item.envelope)).toBe(item.envelope);
    expect(parse).not.toHaveBeenCalled();
  });

  it('parses a look-alike that this process did not validate itself', () => {
    const parse = vi.spyOn(EnvelopeSchema, 'safeParse');
    checkEnvelope({ ...testEnvelope(1) });
    expect(parse).toHaveBeenCalledTimes(1);
  });

  it('uses a mark up once: the same object changed afterwards is checked and refused', () => {
    const envelope: Envelope = EnvelopeSchema.parse(testEnvelope(1));
    vouchEnvelope(envelope, 200);
    checkEnvelope(envelope);
    (envelope as { to: string }).to = '../../etc';
    expect(() => checkEnvelope(envelope)).toThrow(expect.objectContaining({ code: 'INVALID_ENVELOPE' }));
  });

  it('still enforces a size limit smaller than the frame it came in', () => {
    const envelope: Envelope = EnvelopeSchema.parse(testEnvelope(1, { payload: 'x'.repeat(5000) }));
    vouchEnvelope(envelope, 6000);
    let error: unknown;
    try {
      checkEnvelope(envelope, { maxBytes: 4096 });
    } catch (e) {
      error = e;
    }
    expect(isTroupeError(error, 'FRAME_TOO_LARGE')).toBe(true);
  });
});

describe('through createNode, a peer envelope decoded from a frame', () => {
  it('reaches peer admission without a second parse, and admission still refuses what the peer may not send', async () => {
    let bindings!: TransportBindings;
    await using node = await createNode({
      nodeId: 'home',
      storage: memoryStorage(),
      transport: async (b) => ((bindings = b), inProcessTransport(b.nodeId)),
    });
    expect(node.status).toBe('running');
    const frame = decodeFrame(encodeBatch(EPOCH, [{ seq: 1, bytes: encodeEnvelope(testEnvelope(1)) }]), 1024 * 1024);
    if (frame.t !== 'batch') throw new Error('expected a batch');
    const parse = vi.spyOn(EnvelopeSchema, 'safeParse');
    const refused = await bindings.deliver(frame.items[0]!.envelope, 'peer', noCursor()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(parse).not.toHaveBeenCalled();
    expect(isTroupeError(refused, 'ENVELOPE_REFUSED')).toBe(true);
    // The same envelope as a plain object, as another transport would hand it, is parsed.
    await bindings.deliver({ ...testEnvelope(1) }, 'peer', noCursor()).catch(() => {});
    expect(parse).toHaveBeenCalledTimes(1);
  });
});
