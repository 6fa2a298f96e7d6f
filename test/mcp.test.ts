import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { agent, createNode, crew, memoryStorage, scriptedModel, staticSecrets, tool, type ModelRequest, type RunEvent, type RunHandle, type SecretsProvider, type Storage, type Tool, type ToolContext } from '../index.js';
import type { ScriptedTurn } from '../models/scripted.js';
import { mcpTools, secret, type McpStdioServer } from '../tools/mcp.js';
import { TROUPE_BIN } from './helpers/built-cli.js';
import { runTroupe, spawnTroupe } from './helpers/cli.js';
import { watchLines } from './helpers/lines.js';
import { tempDir } from './helpers/temp.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const FIXTURE = fileURLToPath(new URL('./fixtures/mcp-server.ts', import.meta.url));

let dir: { path: string } & AsyncDisposable;
let logCount = 0;
beforeAll(async () => void (dir = await tempDir('troupe-mcp-')));
afterAll(async () => dir[Symbol.asyncDispose]());

/** A fresh log file for one fixture server: every call it serves is a line. */
const newLog = () => join(dir.path, `calls-${++logCount}.log`);
const readLog = async (log: string) => (await readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean);
const callsOf = async (log: string, name: string) => (await readLog(log)).filter((l) => l.startsWith(`call ${name} `)).map((l) => JSON.parse(l.slice(`call ${name} `.length)) as unknown);

const stdioServer = (log: string, env: McpStdioServer['env'] = {}): McpStdioServer => ({
  command: process.execPath,
  args: ['--import', 'tsx', FIXTURE],
  cwd: ROOT,
  env: { MCP_FIXTURE_LOG: log, ...env },
});

/** The fixture over Streamable HTTP, as a child process of the test, with its stdout lines. */
interface HttpFixture {
  url: string;
  waitFor(pattern: RegExp): Promise<string>;
  lines: string[];
  stop(): Promise<void>;
}
async function httpFixture(env: Record<string, string>): Promise<HttpFixture> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', FIXTURE, '--http'], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const { lines, waitFor } = watchLines(child.stdout!, exited, () => `the fixture printed:\n${lines.join('\n')}`);
  const url = (await waitFor(/^listening /)).slice('listening '.length);
  return { url, waitFor, lines, stop: async () => void (child.kill('SIGTERM'), await exited) };
}

/** One agent that calls `name` with `args` once, then answers with what the tool said. */
const callOnce = (name: string, args: unknown) => (req: ModelRequest): ScriptedTurn => {
  const last = req.messages.at(-1)!;
  return last.role === 'tool' ? `saw: ${last.content}` : { toolCalls: [{ name, args }] };
};

async function startRun(tools: Tool[], script: (req: ModelRequest) => ScriptedTurn, options: { storage: Storage; secrets?: SecretsProvider; runId: string }) {
  const node = await createNode({ storage: options.storage, models: { scripted: scriptedModel({ script }) }, ...(options.secrets ? { secrets: options.secrets } : {}) });
  const events: RunEvent[] = [];
  node.subscribe((e) => events.push(e));
  const def = crew({ id: 'mcp-user', agents: [agent({ id: 'user', role: 'uses MCP tools', instructions: 'Use the tools.', model: 'scripted', tools })] });
  const run = await node.run(def, { input: 'go', runId: options.runId });
  return { node, run, events };
}

/** The run's first approval request; fails at once if the run ends without one. */
function approvalOf(run: RunHandle): Promise<Extract<RunEvent, { type: 'approval.requested' }>> {
  return Promise.race([
    new Promise<Extract<RunEvent, { type: 'approval.requested' }>>((resolve) => run.subscribe((e) => e.type === 'approval.requested' && resolve(e))),
    run.settled().then((r) => Promise.reject(new Error(`the run ended (${r.status}: ${String(r.output)}) without asking for approval`))),
  ]);
}

const context = (signal: AbortSignal, secrets: Record<string, string> = {}): ToolContext => ({ signal, callId: 'c1', idempotencyKey: 'r:c1', runId: 'r', agentId: 'a', secrets });

/** Every stored key of `storage` whose key or value contains `text`. */
async function storedWith(storage: Storage, text: string): Promise<string[]> {
  const hits: string[] = [];
  const bytes = Buffer.from(text);
  for await (const [key, value] of storage.entries({})) if (key.includes(text) || Buffer.from(value).includes(bytes)) hits.push(key);
  return hits;
}

/** The status of a POST to `url` with this Host header (fetch may not set Host). */
function postStatus(url: string, host: string, body: unknown): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { host, 'content-type': 'application/json', accept: 'application/json, text/event-stream' } }, (res) => {
      res.resume();
      resolve(res.statusCode!);
      res.destroy();
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
};

describe('tool({ approval: "ask" })', () => {
  it('parks every call for a human even when the agent has no policy; approved, it runs once', async () => {
    const ran: string[] = [];
    const risky = tool({ name: 'risky', description: 'd', input: z.object({ x: z.string() }), effect: 'idempotent', approval: 'ask', run: ({ x }) => (ran.push(x), 'done') });
    await using storage = memoryStorage();
    const { node, run } = await startRun([risky], callOnce('risky', { x: 'a' }), { storage, runId: 'ask-1' });
    await using _node = node;
    expect(await approvalOf(run)).toMatchObject({ reason: 'policy', tool: 'risky' });
    expect(ran).toEqual([]);
    const [pending] = await node.approvals({ status: 'pending' });
    await node.approve(pending!.id);
    expect((await run.result()).output).toBe('saw: done');
    expect(ran).toEqual(['a']);
  });

  it("refuses any other value than 'ask'", () => {
    expect(() => tool({ name: 't', description: 'd', input: z.object({}), effect: 'read', approval: 'always' as 'ask', run: () => 1 })).toThrow(/approval must be 'ask'/);
  });
});

describe('mcpTools over stdio', () => {
  it('turns each MCP tool into a Troupe tool: server schema for the model, irreversible and ask by default, one scope per tool', async () => {
    const log = newLog();
    await using fixture = await mcpTools(stdioServer(log), { include: ['echo', 'send_message'] });
    expect(fixture.status).toBe('connected');
    expect(fixture.server).toEqual({ name: 'fixture', version: '1.2.3' });
    const [echo, send] = fixture.tools;
    expect(echo).toMatchObject({ name: 'echo', effect: 'irreversible', approval: 'ask', scopes: ['mcp:fixture:echo'], secrets: [] });
    expect(echo!.spec.inputSchema).toEqual({ type: 'object', properties: { text: { type: 'string', maxLength: 20 } }, required: ['text'] });
    expect(send!.description).toBe('Sends a message to someone (an effect).');
  });

  it("gives a crew's agent the tool's result (narrowed to read, no approval)", async () => {
    const log = newLog();
    await using fixture = await mcpTools(stdioServer(log), { include: ['echo'], tools: { echo: { effect: 'read', scopes: ['demo:read'], ask: false } } });
    expect(fixture.tools[0]).toMatchObject({ effect: 'read', scopes: ['demo:read'] });
    expect(fixture.tools[0]!.approval).toBeUndefined();
    await using storage = memoryStorage();
    const { node, run, events } = await startRun(fixture.tools, callOnce('echo', { text: 'hello' }), { storage, runId: 'echo-1' });
    await using _node = node;
    expect((await run.result()).output).toBe('saw: echo: hello');
    expect(events.some((e) => e.type === 'approval.requested')).toBe(false);
    expect(await callsOf(log, 'echo')).toEqual([{ text: 'hello' }]);
  });

  it("refuses arguments the server's schema rejects, back to the model, without calling the server", async () => {
    const log = newLog();
    await using fixture = await mcpTools(stdioServer(log), { include: ['echo'], tools: { echo: { effect: 'read', ask: false } } });
    const script = (req: ModelRequest): ScriptedTurn => {
      const tools = req.messages.filter((m) => m.role === 'tool');
      if (tools.length === 0) return { toolCalls: [{ name: 'echo', args: { text: 42 } }] };
      if (tools.length === 1) return { toolCalls: [{ name: 'echo', args: { text: 'x'.repeat(21), extra: true } }] };
      return tools.map((m) => m.content).join(' || ');
    };
    await using storage = memoryStorage();
    const { node, run } = await startRun(fixture.tools, script, { storage, runId: 'bad-args' });
    await using _node = node;
    const { output } = await run.result();
    expect(output).toBe('error: invalid arguments for echo: text: must be string || error: invalid arguments for echo: text: must have at most 20 characters');
    expect(await callsOf(log, 'echo')).toEqual([]);
  });

  it('parks a default (irreversible + ask) tool for approval; approved, the server runs it once', async () => {
    const log = newLog();
    await using fixture = await mcpTools(stdioServer(log), { include: ['send_message'] });
    await using storage = memoryStorage();
    const { node, run } = await startRun(fixture.tools, callOnce('send_message', { to: 'ops', body: 'deploy' }), { storage, runId: 'park-1' });
    await using _node = node;
    const asked = await approvalOf(run);
    expect(asked).toMatchObject({ tool: 'send_message', reason: 'policy' });
    expect(await callsOf(log, 'send_message')).toEqual([]);
    await node.approve(asked.approvalId);
    expect((await run.result()).output).toBe('saw: sent to ops');
    expect(await callsOf(log, 'send_message')).toEqual([{ to: 'ops', body: 'deploy' }]);
  });

  it("returns structured content as JSON, and an MCP error result as a tool error the model reads", async () => {
    const log = newLog();
    await using fixture = await mcpTools(stdioServer(log), { include: ['add', 'fail'], defaults: { effect: 'read', ask: false } });
    const script = (req: ModelRequest): ScriptedTurn => {
      const tools = req.messages.filter((m) => m.role === 'tool');
      if (tools.length === 0) return { toolCalls: [{ name: 'add', args: { a: 2, b: 40 } }, { name: 'fail', args: {} }] };
      return tools.map((m) => `${m.name}${m.isError ? ' (error)' : ''}: ${m.content}`).join(' | ');
    };
    await using storage = memoryStorage();
    const { node, run } = await startRun(fixture.tools, script, { storage, runId: 'results' });
    await using _node = node;
    expect((await run.result()).output).toBe('add: {"sum":42} | fail (error): error: quota exceeded for today');
  });

  it('passes env credentials as secrets and reconnects, ending the old child, when they change', async () => {
    const log = newLog();
    const keys = { first: randomBytes(16).toString('hex'), second: randomBytes(16).toString('hex') };
    const fingerprint = (k: string) => import('node:crypto').then(({ createHash }) => createHash('sha256').update(k).digest('hex').slice(0, 16));
    await using fixture = await mcpTools(stdioServer(log, { API_KEY: secret('API_KEY') }), {
      include: ['key_fingerprint'],
      secrets: staticSecrets({ API_KEY: keys.first }),
      defaults: { effect: 'read', ask: false },
    });
    const [keyTool] = fixture.tools;
    expect(keyTool!.secrets).toEqual(['API_KEY']);
    const signal = new AbortController().signal;
    expect(await keyTool!.run({}, context(signal, { API_KEY: keys.first }))).toBe(await fingerprint(keys.first));
    const [firstPid] = (await readLog(log)).filter((l) => l.startsWith('started ')).map((l) => Number(l.split(' ')[1]));
    expect(await keyTool!.run({}, context(signal, { API_KEY: keys.second }))).toBe(await fingerprint(keys.second));
    const pids = (await readLog(log)).filter((l) => l.startsWith('started ')).map((l) => Number(l.split(' ')[1]));
    expect(pids).toHaveLength(2); // the listing connection served the first call; the new key got a new process
    expect(fixture.status).toBe('connected');
    // The old process is closed once idle; closing waits for every connection the toolset opened.
    await fixture.close();
    expect([isAlive(firstPid!), isAlive(pids[1]!)]).toEqual([false, false]);
  });

  it('closing the tools ends the child process; close is idempotent and later calls are tool errors', async () => {
    const log = newLog();
    const fixture = await mcpTools(stdioServer(log), { include: ['echo'], tools: { echo: { effect: 'read', ask: false } } });
    const pid = Number((await readLog(log)).find((l) => l.startsWith('started '))!.split(' ')[1]);
    expect(isAlive(pid)).toBe(true);
    await Promise.all([fixture.close(), fixture[Symbol.asyncDispose]()]);
    expect(fixture.status).toBe('closed');
    expect(isAlive(pid)).toBe(false);
    await fixture.close();
    await expect(Promise.resolve(fixture.tools[0]!.run({ text: 'x' }, context(new AbortController().signal)))).rejects.toMatchObject({ code: 'TOOL_FAILED', details: { reason: 'mcp-closed' } });
  });

  it('refuses a tool whose schema it cannot validate faithfully, unless left out or given its own schema', async () => {
    const log = newLog();
    const refused = await mcpTools(stdioServer(log)).then(() => undefined, (e: unknown) => e);
    expect(refused).toMatchObject({ code: 'SCHEMA_UNSUPPORTED', details: { tool: 'strict_form', keyword: 'unevaluatedProperties' } });
    // The refused build closed the process it had started.
    const pid = Number((await readLog(log)).find((l) => l.startsWith('started '))!.split(' ')[1]);
    expect(isAlive(pid)).toBe(false);
    await using own = await mcpTools(stdioServer(newLog()), { include: ['strict_form'], tools: { strict_form: { input: z.strictObject({ name: z.string() }), effect: 'read', ask: false } } });
    expect(own.tools[0]!.spec.inputSchema).toMatchObject({ additionalProperties: false });
    expect(await own.tools[0]!.run({ name: 'n' }, context(new AbortController().signal))).toBe('ok');
  });

  it('refuses misconfiguration with a TypeError naming it', async () => {
    await expect(mcpTools(stdioServer(newLog()), { include: ['nope'] })).rejects.toThrow(/has no tool "nope"; it has echo, /);
    await expect(mcpTools(stdioServer(newLog()), { defaults: { effect: 'compensatable' as 'read' } })).rejects.toThrow(/no undo/);
    await expect(mcpTools({ url: 'ftp://example.com/mcp' })).rejects.toThrow(/http: or https:/);
    await expect(mcpTools(stdioServer(newLog()), { include: ['echo', 'add'], tools: { add: { name: 'echo' } } })).rejects.toThrow(/would both be called "echo"/);
  });

  it('`troupe run` of a crew module with MCP tools prints the result and exits (the CLI closes the child)', async () => {
    const log = newLog();
    await using db = await tempDir();
    const { code, stdout, stderr } = await runTroupe(['run', 'test/fixtures/mcp-crew.ts', '--db', db.path, '--plain'], { MCP_FIXTURE_LOG: log });
    expect(code, stderr).toBe(0);
    expect(stdout).toContain('the server said: echo: from the CLI');
    const pid = Number((await readLog(log)).find((l) => l.startsWith('started '))!.split(' ')[1]);
    expect(isAlive(pid)).toBe(false);
  });
});

describe('mcpTools over Streamable HTTP', () => {
  it("resolves a header credential from the node's secrets; the token reaches the server and never the storage", async () => {
    const token = randomBytes(24).toString('base64url');
    const server = await httpFixture({ MCP_EXPECTED_TOKEN: token, MCP_FIXTURE_LOG: newLog() });
    try {
      const secrets = staticSecrets({ MCP_TOKEN: token });
      await using fixture = await mcpTools(
        { url: server.url, headers: { Authorization: secret('MCP_TOKEN', (v) => `Bearer ${v}`) } },
        { secrets, include: ['whoami'], tools: { whoami: { effect: 'read', ask: false } } },
      );
      expect(fixture.tools[0]!.secrets).toEqual(['MCP_TOKEN']);
      await using storage = memoryStorage();
      const { node, run } = await startRun(fixture.tools, callOnce('whoami', {}), { storage, secrets, runId: 'http-1' });
      await using _node = node;
      // The server repeats the header it got: the node scrubs it before anything is stored.
      expect((await run.result()).output).toBe('saw: token accepted (header was Bearer [redacted])');
      for (const form of [token, Buffer.from(token).toString('base64'), Buffer.from(token).toString('hex')]) expect(await storedWith(storage, form)).toEqual([]);
      expect(await storedWith(storage, 'token accepted')).not.toEqual([]); // the scan does see the run's data
    } finally {
      await server.stop();
    }
  });

  it('fails to connect without the credential, naming the reason but never the value', async () => {
    const token = randomBytes(24).toString('base64url');
    const server = await httpFixture({ MCP_EXPECTED_TOKEN: token });
    try {
      const wrong = randomBytes(24).toString('base64url');
      const error = await mcpTools({ url: server.url, headers: { Authorization: secret('MCP_TOKEN', (v) => `Bearer ${v}`) } }, { secrets: staticSecrets({ MCP_TOKEN: wrong }) }).then(() => undefined, (e: unknown) => e);
      expect(error).toMatchObject({ code: 'MCP_CONNECT_FAILED' });
      expect(JSON.stringify(error)).not.toContain(wrong);
      const missing = await mcpTools({ url: server.url, headers: { Authorization: secret('MCP_TOKEN') } }, { secrets: staticSecrets({}) }).then(() => undefined, (e: unknown) => e);
      expect(missing).toMatchObject({ code: 'TOOL_FAILED', details: { reason: 'secret-missing', names: ['MCP_TOKEN'] } });
    } finally {
      await server.stop();
    }
  });

  it("passes the call's AbortSignal to the server, and close() ends the HTTP session", async () => {
    const server = await httpFixture({});
    try {
      const fixture = await mcpTools({ url: server.url }, { include: ['slow'] });
      const session = (await server.waitFor(/^session opened /)).split(' ')[2];
      const controller = new AbortController();
      const call = Promise.resolve(fixture.tools[0]!.run({}, context(controller.signal)));
      await server.waitFor(/^slow started$/);
      controller.abort(new Error('run stopping'));
      await expect(call).rejects.toThrow();
      await server.waitFor(/^slow cancelled$/);
      await fixture.close();
      expect(fixture.status).toBe('closed');
      expect(await server.waitFor(new RegExp(`^session closed ${session}$`))).toBeTruthy();
    } finally {
      await server.stop();
    }
  });
});

describe('troupe mcp serve', () => {
  /** An SDK client speaking to `troupe mcp serve …args` over its stdio. */
  async function serveOverStdio(args: string[]) {
    const transport = new StdioClientTransport({ command: process.execPath, args: [TROUPE_BIN, 'mcp', 'serve', ...args], cwd: ROOT, env: { TROUPE_SCRIPTED_LATENCY_MS: '0', NO_COLOR: '1' }, stderr: 'ignore' });
    const client = new Client({ name: 'test', version: '1' });
    await client.connect(transport);
    return { client, transport };
  }

  it("exposes a crew as one MCP tool over stdio and returns the crew's output", async () => {
    await using db = await tempDir();
    const { client, transport } = await serveOverStdio(['examples/research-crew.ts', '--db', db.path]);
    const pid = transport.pid!;
    try {
      const { tools } = await client.listTools();
      expect(tools.map((t) => t.name)).toEqual(['research-crew']);
      expect(tools[0]!.inputSchema).toMatchObject({ type: 'object', properties: { input: { type: 'string' } }, required: ['input'] });
      const result = await client.callTool({ name: 'research-crew', arguments: { input: 'Write a brief on actors' } });
      expect(result.isError).toBeFalsy();
      expect(result.content).toEqual([{ type: 'text', text: expect.stringMatching(/^Brief: Troupe combines three ideas\./) }]);
    } finally {
      await client.close();
    }
    expect(isAlive(pid)).toBe(false);
    // The run was stored in the LevelDB under --db like any other (the server has released it).
    const runs = await runTroupe(['runs', '--db', db.path, '--json']);
    expect(JSON.parse(runs.stdout)).toEqual({ runs: [expect.objectContaining({ crew: 'research-crew', status: 'completed' })] });
  });

  it("answers a failed run with an MCP error result carrying the run's error", async () => {
    await using db = await tempDir();
    const { client } = await serveOverStdio(['test/fixtures/failing-crew.ts', '--db', db.path]);
    try {
      const result = await client.callTool({ name: 'failing-crew', arguments: { input: 'try' } });
      expect(result.isError).toBe(true);
      expect(result.content).toEqual([{ type: 'text', text: expect.stringMatching(/^run \S+ failed: \[BUDGET_EXCEEDED\] /) }]);
    } finally {
      await client.close();
    }
  });

  it('serves Streamable HTTP with --http on 127.0.0.1, port 0', async () => {
    await using db = await tempDir();
    const proc = spawnTroupe(['mcp', 'serve', 'examples/research-crew.ts', '--db', db.path, '--http', '127.0.0.1:0'], { TROUPE_SCRIPTED_LATENCY_MS: '0' });
    try {
      const url = /(http:\/\/127\.0\.0\.1:\d+\/mcp)/.exec(await proc.waitFor(/^listening on /))![1]!;
      const client = new Client({ name: 'test', version: '1' });
      const transport = new StreamableHTTPClientTransport(new URL(url));
      await client.connect(transport);
      const result = await client.callTool({ name: 'research-crew', arguments: { input: 'Write a brief on actors' } });
      expect(result.content).toEqual([{ type: 'text', text: expect.stringMatching(/^Brief: /) }]);
      await transport.terminateSession();
      await client.close();
      // An initialize whose Host is not this server's is refused (DNS rebinding protection).
      const initialize = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'evil', version: '1' } } };
      expect(await postStatus(url, 'rebound.example:80', initialize)).toBe(403);
      expect(await postStatus(url, new URL(url).host, initialize)).toBe(200);
    } finally {
      proc.child.kill('SIGTERM');
      expect(await proc.exit).toEqual({ code: 0, signal: null });
    }
  });
});
