import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './temp.js';

/** Whether `openssl` can be run here; TLS tests skip (saying so) without it. */
export const hasOpenssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

/** PEM files made for one test, removed on dispose. */
export interface TestPki extends AsyncDisposable {
  dir: string;
  /** Paths of the files, and their contents. */
  files: { ca: string; cert: string; key: string; otherCa: string; clientCert: string; clientKey: string };
  pem: { ca: Buffer; cert: Buffer; key: Buffer; otherCa: Buffer; clientCert: Buffer; clientKey: Buffer };
}

/**
 * A throwaway PKI made with openssl: a CA, a server certificate it signed for 127.0.0.1 and
 * localhost, a client certificate it signed, and an unrelated CA (one that trusts nothing here).
 */
export async function createTestPki(): Promise<TestPki> {
  const tmp = await tempDir('troupe-pki-');
  const at = (name: string) => join(tmp.path, name);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: tmp.path, stdio: ['ignore', 'ignore', 'pipe'] });
  // P-256 keys: as good for a test as RSA, and far quicker to make on a loaded machine.
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = (name: string) => ssl('req', '-x509', ...newKey, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${name}`);
  const leaf = (name: string, cn: string, ext: string) => {
    ssl('req', ...newKey, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', ext);
  };
  try {
    ca('ca');
    ca('other-ca');
    writeFileSync(at('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
    writeFileSync(at('client.ext'), 'extendedKeyUsage=clientAuth\n');
    leaf('server', 'troupe-node', 'server.ext');
    leaf('client', 'troupe-client', 'client.ext');
  } catch (error) {
    await tmp[Symbol.asyncDispose]();
    throw error;
  }
  const files = { ca: at('ca.pem'), cert: at('server.pem'), key: at('server.key'), otherCa: at('other-ca.pem'), clientCert: at('client.pem'), clientKey: at('client.key') };
  const pem = Object.fromEntries(Object.entries(files).map(([k, v]) => [k, readFileSync(v)])) as TestPki['pem'];
  return { dir: tmp.path, files, pem, [Symbol.asyncDispose]: () => tmp[Symbol.asyncDispose]() };
}
