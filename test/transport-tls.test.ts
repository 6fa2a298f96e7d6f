import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createNode } from '../core/node.js';
import { isTroupeError, ErrorCode } from '../core/errors.js';
import { levelStorage } from '../storage/level.js';
import { memoryStorage } from '../storage/memory.js';
import { scriptedModel } from '../models/scripted.js';
import { describeDialError, loadTlsFiles } from '../transports/tls.js';
import { get as httpsGet } from 'node:https';
import { createWsTransport, wsTransport, type WsTransportOptions } from '../transports/ws.js';
import { recorder, testEnvelope } from '../testing/transport-conformance.js';
import { createTestPki, hasOpenssl, type TestPki } from './helpers/certs.js';
import { pairScript, placedCrew } from './helpers/fixtures.js';
import { runTroupe, spawnTroupe } from './helpers/cli.js';
import { tempDir } from './helpers/temp.js';

const SECRET = 'transport-test-secret-0123456789';
const listen = { host: '127.0.0.1', port: 0 } as const;
if (!hasOpenssl) console.warn('transport-tls: openssl is not installed, so no test certificates can be made; the TLS tests skip');

// One PKI for the file: making keys is the slow part, and no test changes the files.
let pki: TestPki;
beforeAll(async () => {
  if (hasOpenssl) pki = await createTestPki();
});
afterAll(async () => {
  await pki?.[Symbol.asyncDispose]();
});

const ws = (nodeId: string, extra: Partial<WsTransportOptions>, deliver = recorder()) =>
  createWsTransport({ nodeId, storage: memoryStorage(), secret: SECRET, deliver: deliver.deliver, reconnectMinMs: 10, reconnectMaxMs: 100, ...extra });

describe.skipIf(!hasOpenssl)('wss:// between nodes', () => {
  it('runs a crew across two nodes over TLS with a CA-signed server certificate, the sealed frames inside', async () => {
    await using dirA = await tempDir();
    await using dirB = await tempDir();
    await using storeA = await levelStorage({ path: dirA.path });
    await using storeB = await levelStorage({ path: dirB.path });
    const models = () => ({ scripted: scriptedModel({ script: pairScript }) });
    const atA = wsTransport({ secret: SECRET, listen, tls: { cert: pki.pem.cert, key: pki.pem.key } });
    await using a = await createNode({ nodeId: 'a', storage: storeA, transport: atA, crews: [placedCrew()], models: models() });
    const url = (await atA.created).address!.url;
    expect(url).toMatch(/^wss:\/\/127\.0\.0\.1:\d+$/);
    const atB = wsTransport({ secret: SECRET, peers: { a: url }, tls: { ca: pki.pem.ca, requirePeers: true }, reconnectMinMs: 10 });
    await using b = await createNode({ nodeId: 'b', storage: storeB, transport: atB, crews: [placedCrew()], models: models() });
    const partDone = new Promise<void>((resolve) => b.subscribe((e) => e.type === 'run.completed' && e.runId === 't1' && resolve()));
    const run = await a.run(placedCrew(), { input: 'brief me', runId: 't1' });
    expect((await run.result()).output).toBe('final: a brief about actor and state');
    await partDone;
    const [tA, tB] = [await atA.created, await atB.created];
    expect(tA.stats().accepted).toBeGreaterThanOrEqual(1); // the HMAC hello was proven inside TLS
    expect(tB.stats().delivered).toBeGreaterThan(0);
  });

  it('a peer trusting another CA cannot connect, and says why; the listener keeps serving', async () => {
    const atA = recorder();
    await using a = await ws('a', { listen, tls: { cert: pki.pem.cert, key: pki.pem.key } }, atA);
    await using stranger = await ws('b', { peers: { a: a.address!.url }, tls: { ca: pki.pem.otherCa } });
    await stranger.send('a', testEnvelope(1));
    await vi.waitFor(() => expect(stranger.peers()[0]?.lastError).toMatch(/^TLS: wss:\/\/127\.0\.0\.1:\d+ presented a certificate this node does not trust/), { timeout: 5000, interval: 20 });
    expect(stranger.peers()[0]).toMatchObject({ nodeId: 'a', unacked: 1 });
    expect(a.stats().accepted).toBe(0);
    // The same listener still serves a peer that trusts its CA.
    await using friend = await ws('c', { peers: { a: a.address!.url }, tls: { ca: pki.pem.ca } });
    await friend.send('a', testEnvelope(2));
    await atA.until(1);
    expect(atA.received[0]!.from).toBe('c');
  });

  it('a ws:// dial to a TLS listener fails with an error naming wss://', async () => {
    await using a = await ws('a', { listen, tls: { cert: pki.pem.cert, key: pki.pem.key } });
    const plain = a.address!.url.replace('wss://', 'ws://');
    await using b = await ws('b', { peers: { a: plain } });
    await b.send('a', testEnvelope(1));
    await vi.waitFor(() => expect(b.peers()[0]?.lastError).toMatch(/if that node listens with TLS, dial it as wss:\/\//), { timeout: 5000, interval: 20 });
    await vi.waitFor(() => expect(a.stats().rejected.badRequest).toBeGreaterThanOrEqual(1), { timeout: 5000, interval: 20 });
    // And a node that requires TLS refuses the plain url outright.
    await expect(ws('c', { peers: { a: plain }, tls: { ca: pki.pem.ca, requirePeers: true } })).rejects.toThrow(/not TLS, and tls.requirePeers asks for wss:\/\/ urls only/);
  });

  it('mutual TLS: with requireClientCert only a client holding a certificate signed by the CA gets through', async () => {
    const atA = recorder();
    await using a = await ws('a', { listen, tls: { cert: pki.pem.cert, key: pki.pem.key, ca: pki.pem.ca, requireClientCert: true } }, atA);
    await using anonymous = await ws('b', { peers: { a: a.address!.url }, tls: { ca: pki.pem.ca } });
    await anonymous.send('a', testEnvelope(1));
    await vi.waitFor(() => expect(a.stats().rejected.badRequest).toBeGreaterThanOrEqual(1), { timeout: 5000, interval: 20 });
    expect(a.stats().accepted).toBe(0);
    await using holder = await ws('c', { peers: { a: a.address!.url }, tls: { ca: pki.pem.ca, cert: pki.pem.clientCert, key: pki.pem.clientKey } });
    await holder.send('a', testEnvelope(2));
    await atA.until(1);
    expect(atA.received[0]!.from).toBe('c');
  });

  it('refuses bad tls options at start, naming what is wrong', async () => {
    await expect(ws('a', { listen, tls: { cert: pki.pem.cert } })).rejects.toThrow(/tls.cert needs tls.key too/);
    await expect(ws('a', { listen, tls: { ca: pki.pem.ca } })).rejects.toThrow(/listening with tls needs tls.cert and tls.key/);
    await expect(ws('a', { listen, tls: { cert: pki.pem.cert, key: pki.pem.clientKey } })).rejects.toThrow(/tls.key is not the private key of tls.cert/);
    await expect(ws('a', { listen, tls: { cert: 'not a cert', key: pki.pem.key } })).rejects.toThrow(/tls.cert is not a PEM certificate/);
    const missing = `${pki.dir}/nope.pem`;
    const error = (() => {
      try {
        loadTlsFiles({ cert: missing, key: pki.files.key }, true);
      } catch (e) {
        return e;
      }
    })();
    expect(isTroupeError(error, ErrorCode.CONFIG_INVALID)).toBe(true);
    expect((error as Error).message).toBe(`cannot read ${missing}: no such file`);
    expect(() => loadTlsFiles({ cert: pki.files.key, key: pki.files.key }, true)).toThrow(`${pki.files.key} is not a PEM certificate`);
    const altname = Object.assign(new Error("Hostname/IP does not match certificate's altnames"), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
    expect(describeDialError('wss://10.0.0.9:7401', altname)).toMatch(/^TLS: the certificate of wss:\/\/10\.0\.0\.9:7401 does not name that host/);
  });
});

const EXAMPLE = 'examples/distributed-crew.ts';
const ENV = { TROUPE_SECRET: 'test-cluster-secret-0123456789', TROUPE_DISTRIBUTED: '1', TROUPE_SCRIPTED_LATENCY_MS: '0' };

describe('troupe CLI with --tls-cert, --tls-key and --tls-ca', () => {
  it.skipIf(!hasOpenssl)('runs a crew against `troupe node`s listening on wss://', async () => {
    await using dbA = await tempDir();
    await using dbB = await tempDir();
    await using dbC = await tempDir();
    const tlsArgs = ['--tls-cert', pki.files.cert, '--tls-key', pki.files.key];
    const start = async (id: string, db: string, extra: string[] = []) => {
      const proc = spawnTroupe(['node', '--node-id', id, '--listen', '127.0.0.1:0', '--db', db, '--crew', EXAMPLE, ...tlsArgs, ...extra], ENV);
      const line = await proc.waitFor(/^node \S+ listening on wss:\/\//);
      await proc.waitFor(/^node \S+ ready/);
      return { proc, url: line.slice(line.indexOf('wss://')) };
    };
    const b = await start('b', dbB.path);
    // c admits only peers with a client certificate of the CA; the origin dials wss:// only.
    const c = await start('c', dbC.path, ['--tls-client-cert', '--tls-ca', pki.files.ca]);
    try {
      const client = ['--tls-cert', pki.files.clientCert, '--tls-key', pki.files.clientKey, '--tls-ca', pki.files.ca, '--tls-peers-only'];
      const origin = await runTroupe(['run', EXAMPLE, '--node-id', 'a', '--db', dbA.path, '--peer', `b=${b.url}`, '--peer', `c=${c.url}`, ...client], ENV);
      expect(origin.stderr).not.toMatch(/Error/);
      expect(origin.code).toBe(0);
      expect(origin.stdout).toMatch(/completed in/);
      // Without a client certificate, c hangs up during the TLS handshake; b answers over HTTPS.
      const probe = (url: string) =>
        new Promise<string>((resolve) => {
          const req = httpsGet(url.replace(/^wss:/, 'https:'), { ca: pki.pem.ca }, (res) => {
            res.resume();
            resolve(`http ${res.statusCode}`);
          });
          req.on('error', (error: NodeJS.ErrnoException) => resolve(`error ${error.code ?? error.message}`));
        });
      expect(await probe(b.url)).toMatch(/^http \d+$/);
      expect(await probe(c.url)).toMatch(/^error /);
    } finally {
      b.proc.child.kill('SIGTERM');
      c.proc.child.kill('SIGTERM');
      await Promise.all([b.proc.exit, c.proc.exit]);
    }
  }, 60_000);

  it('exits 2 for --tls-cert without --tls-key, and 1 naming a missing file', async () => {
    await using db = await tempDir();
    const usage = await runTroupe(['node', '--listen', '127.0.0.1:0', '--db', db.path, '--tls-cert', 'cert.pem'], ENV);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--tls-cert needs --tls-key/);
    const missing = await runTroupe(['node', '--listen', '127.0.0.1:0', '--db', db.path, '--tls-cert', `${db.path}/none.pem`, '--tls-key', `${db.path}/none.key`], ENV);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain(`cannot read ${db.path}/none.pem: no such file`);
  }, 30_000);

  it('exits 2 for --tls-client-cert without a CA to check against, and 1 for a ws:// peer under --tls-peers-only', async () => {
    await using db = await tempDir();
    const noCa = await runTroupe(['node', '--listen', '127.0.0.1:0', '--db', db.path, '--tls-cert', pki.files.cert, '--tls-key', pki.files.key, '--tls-client-cert'], ENV);
    expect(noCa.code).toBe(2);
    expect(noCa.stderr).toMatch(/--tls-client-cert needs --listen, --tls-cert and --tls-key \(to serve wss:\/\/\) and --tls-ca/);
    const plain = await runTroupe(['run', EXAMPLE, '--db', db.path, '--peer', 'b=ws://127.0.0.1:9', '--tls-ca', pki.files.ca, '--tls-peers-only'], ENV);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/peer "b" at ws:\/\/127.0.0.1:9 is not TLS, and tls.requirePeers asks for wss:\/\/ urls only/);
  }, 30_000);
});
