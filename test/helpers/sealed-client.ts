import { once } from 'node:events';
import { WebSocket } from 'ws';
import { clientHandshake, createFrameSeal, deriveSessionKeys, encodeHello, HEADERS, PROTOCOL, verifyServerProof, type FrameSeal } from '../../transports/index.js';

/**
 * A hand-driven client of the WebSocket transport holding the secret: it completes the
 * handshake, answers the challenge with a sealed hello, then sends whatever frames a test
 * builds (sealed, so they reach the frame decoder) and opens what it receives.
 */
export interface SealedClient {
  ws: WebSocket;
  seal: FrameSeal;
  /** Sends `frame` sealed for this connection. */
  send(frame: Uint8Array): void;
  /** Sends bytes as they are (no tag): for tests of what an unsealed stranger gets. */
  sendRaw(data: Uint8Array | string): void;
  /** Opens a received message (throws if its tag does not verify). */
  open(data: unknown): Uint8Array;
}

/** Connects to `url` as node `from`, addressed to listener `to`, keyed with `key`. */
export async function sealedClient(url: string, key: Buffer, from: string, to: string): Promise<SealedClient> {
  const headers = clientHandshake(key, from, to, Date.now());
  const nonce = headers[HEADERS.nonce]!;
  const ws = new WebSocket(url, [PROTOCOL], { headers, perMessageDeflate: false });
  ws.on('error', () => {});
  let seal: FrameSeal | undefined;
  ws.once('upgrade', (response) => {
    const challenge = verifyServerProof(key, response.headers, to, from, nonce);
    if (challenge) seal = createFrameSeal(deriveSessionKeys(key, from, to, nonce, challenge), 'client');
  });
  await once(ws, 'open');
  if (!seal) throw new Error(`${url} did not prove itself`);
  const s = seal;
  ws.send(s.seal(encodeHello()));
  return {
    ws,
    seal: s,
    send: (frame) => ws.send(s.seal(frame)),
    sendRaw: (data) => ws.send(data),
    open(data) {
      const opened = s.open(data as Buffer);
      if (!opened) throw new Error('a frame from the listener did not verify');
      return opened;
    },
  };
}
