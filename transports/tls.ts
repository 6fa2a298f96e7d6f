import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ErrorCode, TroupeError } from '../core/errors.js';

/**
 * TLS for the WebSocket transport. TLS only adds confidentiality (and, with a CA, a check of
 * the listener's host): the HMAC handshake and the sealed frames (transports/auth.ts,
 * transports/session.ts) keep authenticating the nodes inside it, so a node with a valid
 * certificate but without the cluster secret still gets no connection.
 */

/** PEM text, or several (a CA bundle). */
export type Pem = string | Buffer | readonly (string | Buffer)[];

/** The `tls` option of the WebSocket transport. */
export interface WsTlsOptions {
  /** This node's certificate chain (PEM): listens as `wss://`, and is shown to listeners asking for a client certificate. */
  cert?: string | Buffer;
  /** The private key of `cert` (PEM). Needed with `cert`. */
  key?: string | Buffer;
  /** CAs trusted for `wss://` peers (and for client certificates). Default the system's CAs. */
  ca?: Pem;
  /** Refuse `ws://` peer urls: every dialled connection must be TLS. Default `false`. */
  requirePeers?: boolean;
  /** Mutual TLS: the listener accepts only clients whose certificate `ca` signed. Default `false`. */
  requireClientCert?: boolean;
}

/** {@link WsTlsOptions} checked once, with defaults applied. */
export interface ResolvedTls {
  /** Set when this node has an identity (it must, to listen). */
  identity: { cert: string | Buffer; key: string | Buffer } | undefined;
  ca: (string | Buffer)[] | undefined;
  requirePeers: boolean;
  requireClientCert: boolean;
}

const asList = (pem: Pem): (string | Buffer)[] => (typeof pem === 'string' || Buffer.isBuffer(pem) ? [pem] : [...pem]);

/**
 * Checks `tls` once, at start, so a bad certificate fails loudly here rather than as a
 * handshake error on every connection. Throws a `TypeError` naming the field (`what` says
 * where the value came from, e.g. a file name).
 */
export function resolveTls(tls: WsTlsOptions, listens: boolean, what: Partial<Record<'cert' | 'key' | 'ca', string>> = {}): ResolvedTls {
  if (!tls || typeof tls !== 'object') throw new TypeError('tls must be { cert, key, ca? } or { ca }');
  const name = (field: 'cert' | 'key' | 'ca') => what[field] ?? `tls.${field}`;
  if ((tls.cert === undefined) !== (tls.key === undefined)) throw new TypeError(`${tls.cert === undefined ? name('key') : name('cert')} needs ${tls.cert === undefined ? 'tls.cert' : 'tls.key'} too`);
  // A listener asked for TLS but given no certificate would silently listen in the clear.
  if (listens && tls.cert === undefined) throw new TypeError('listening with tls needs tls.cert and tls.key');
  let identity: ResolvedTls['identity'];
  if (tls.cert !== undefined && tls.key !== undefined) {
    const cert = certificate(tls.cert, name('cert'));
    let key;
    try {
      key = createPrivateKey(tls.key);
    } catch (cause) {
      throw new TypeError(`${name('key')} is not a PEM private key: ${(cause as Error).message}`);
    }
    if (!cert.checkPrivateKey(key)) throw new TypeError(`${name('key')} is not the private key of ${name('cert')}`);
    identity = { cert: tls.cert, key: tls.key };
  }
  const ca = tls.ca === undefined ? undefined : asList(tls.ca);
  for (const one of ca ?? []) certificate(one, name('ca'));
  if (tls.requireClientCert && !ca) throw new TypeError('tls.requireClientCert needs tls.ca to check client certificates against');
  return { identity, ca, requirePeers: tls.requirePeers ?? false, requireClientCert: tls.requireClientCert ?? false };
}

function certificate(pem: string | Buffer, name: string): X509Certificate {
  if (!/-----BEGIN CERTIFICATE-----/.test(pem.toString())) throw new TypeError(`${name} is not a PEM certificate (no "BEGIN CERTIFICATE" block)`);
  try {
    return new X509Certificate(pem);
  } catch (cause) {
    throw new TypeError(`${name} is not a valid certificate: ${(cause as Error).message}`);
  }
}

/** Files of {@link loadTlsFiles}. */
export interface TlsFiles {
  cert?: string;
  key?: string;
  ca?: string;
}

/**
 * Reads the certificate files once (the CLI's `--tls-cert`, `--tls-key`, `--tls-ca`) and
 * checks them with {@link resolveTls}. A missing, unreadable or invalid file fails with
 * `CONFIG_INVALID` naming it.
 */
export function loadTlsFiles(files: TlsFiles, listens: boolean): WsTlsOptions {
  const read = (file: string) => {
    try {
      return readFileSync(file);
    } catch (cause) {
      const why = (cause as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (cause as Error).message;
      throw new TroupeError(ErrorCode.CONFIG_INVALID, `cannot read ${file}: ${why}`, { cause, details: { file } });
    }
  };
  const tls: WsTlsOptions = {
    ...(files.cert !== undefined ? { cert: read(files.cert) } : {}),
    ...(files.key !== undefined ? { key: read(files.key) } : {}),
    ...(files.ca !== undefined ? { ca: read(files.ca) } : {}),
  };
  try {
    resolveTls(tls, listens, files);
  } catch (cause) {
    throw new TroupeError(ErrorCode.CONFIG_INVALID, (cause as Error).message, { cause, details: { ...files } });
  }
  return tls;
}

/**
 * A dial error made readable: TLS verification failures say what was not trusted, and a
 * `ws://` dial that the other end hung up on says it may be a TLS-only listener.
 */
export function describeDialError(url: string, error: Error & { code?: string }): string {
  const code = error.code ?? '';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return `TLS: the certificate of ${url} does not name that host (${error.message}); its subjectAltName must list the address peers dial`;
  }
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ERR_TLS|HOSTNAME/.test(code)) {
    return `TLS: ${url} presented a certificate this node does not trust (${code}: ${error.message}); pass the CA that signed it (tls.ca, --tls-ca)`;
  }
  if (url.startsWith('ws://') && (code === 'ECONNRESET' || /socket hang up/.test(error.message))) {
    return `${error.message} dialling ${url}: if that node listens with TLS, dial it as wss://`;
  }
  return error.message;
}
