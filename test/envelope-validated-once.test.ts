import { afterEach, describe, expect, it, vi } from 'vitest';
import { checkEnvelope, EnvelopeSchema, vouchEnvelope, type Envelope } from '../core/envelope.js';
import { isTroupeError } from '../core/errors.js';
import { decodeFrame, encodeBatch } from '../transports/frames.js';
import { encodeEnvelope } from '../core/envelope.js';
import { testEnvelope } from '../testing/transport-conformance.js';

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
