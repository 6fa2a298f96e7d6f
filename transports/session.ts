import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';

/**
 * Per-connection integrity of the frames two nodes exchange. The handshake authenticates the
 * endpoints; without this, anything on the path could splice frames into an authenticated
 * connection, and a recorded handshake replayed to a listener that forgot its nonce (a
 * restart) would give a stranger a connection to write into. Each connection derives its own
 * keys from the shared secret and both ends' fresh nonces, so no recorded bytes are valid on
 * another connection; each frame carries an HMAC over a per-direction counter, so frames
 * cannot be dropped, reordered, replayed or altered inside one either.
 */

/** Bytes of the tag appended to every frame. */
export const MAC_BYTES = 32;

/** The two directional keys of one connection. */
export interface SessionKeys {
  /** Keys frames the dialling node sends. */
  clientToServer: Buffer;
  /** Keys frames the listening node sends. */
  serverToClient: Buffer;
}

/**
 * HKDF-SHA256 over the shared secret, salted with both nonces (the client's, signed in its
 * handshake, and the listener's fresh challenge), bound to both node ids.
 */
export function deriveSessionKeys(secret: Buffer, client: string, server: string, clientNonce: string, serverNonce: string): SessionKeys {
  const salt = Buffer.concat([Buffer.from(clientNonce, 'hex'), Buffer.from(serverNonce, 'hex')]);
  const okm = Buffer.from(hkdfSync('sha256', secret, salt, `troupe.v2 session\n${client}\n${server}`, 64));
  return { clientToServer: okm.subarray(0, 32), serverToClient: okm.subarray(32) };
}

/** Seals outgoing frames and opens incoming ones of one connection, in order. */
export interface FrameSeal {
  /** The frame with its tag appended; call in the order the frames go on the wire. */
  seal(frame: Uint8Array): Buffer;
  /**
   * {@link seal} for a frame encoded with {@link MAC_BYTES} of room at its end (see
   * `encodeBatch`'s `tailBytes`): the tag is written there, and the same buffer returned.
   */
  sealTail(buffer: Buffer): Buffer;
  /** The frame without its tag, or `undefined` when the tag does not verify (the connection must end). */
  open(sealed: Uint8Array): Uint8Array | undefined;
}

function tag(key: Buffer, counter: bigint, frame: Uint8Array): Buffer {
  const n = Buffer.alloc(8);
  n.writeBigUInt64BE(counter);
  return createHmac('sha256', key).update(n).update(frame).digest();
}

/** The seal of one end: `role` says which key it sends with. */
export function createFrameSeal(keys: SessionKeys, role: 'client' | 'server'): FrameSeal {
  const sendKey = role === 'client' ? keys.clientToServer : keys.serverToClient;
  const receiveKey = role === 'client' ? keys.serverToClient : keys.clientToServer;
  let sent = 0n;
  let received = 0n;
  let broken = false;
  return {
    seal(frame) {
      return Buffer.concat([frame, tag(sendKey, sent++, frame)]);
    },
    sealTail(buffer) {
      if (buffer.byteLength < MAC_BYTES) throw new TypeError(`sealTail needs a buffer ending in ${MAC_BYTES} bytes of room for the tag`);
      const frame = buffer.subarray(0, buffer.byteLength - MAC_BYTES);
      tag(sendKey, sent++, frame).copy(buffer, frame.byteLength);
      return buffer;
    },
    open(sealed) {
      // One bad frame ends trust in the connection: nothing after it is opened either.
      if (broken || sealed.byteLength < MAC_BYTES) return ((broken = true), undefined);
      const frame = sealed.subarray(0, sealed.byteLength - MAC_BYTES);
      const expected = tag(receiveKey, received, frame);
      if (!timingSafeEqual(expected, sealed.subarray(sealed.byteLength - MAC_BYTES))) return ((broken = true), undefined);
      received++;
      return frame;
    },
  };
}
