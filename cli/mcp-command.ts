import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { createNode, type TroupeNode } from '../core/node.js';
import { ErrorCode, TroupeError } from '../core/errors.js';
import type { RunEvent } from '../core/events.js';
import type { RunResult } from '../core/run-host.js';
import { nodeIdFor, openStorage, type LeaseFlags } from './open-storage.js';
import { closeMcpToolsets } from '../tools/mcp.js';
import { serveControlSocket } from './control-socket.js';
import { decideHint, resumeHint } from './hints.js';
import type { CrewModule } from './load.js';

interface ServeOptions extends LeaseFlags {
  db: string;
  http?: { host: string; port: number };
}

/** Largest JSON-RPC body `--http` reads (a task is text; 4 MiB is generous). */
const MAX_BODY_BYTES = 4 * 1024 * 1024;

/** An MCP tool name from a crew id: the characters MCP allows, at most 128. */
const toolName = (id: string) => id.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 128) || 'crew';

const text = (value: string, isError = false): CallToolResult => ({ content: [{ type: 'text', text: value }], ...(isError ? { isError: true } : {}) });

/** Runs the crew once for one MCP call and says how it ended. */
async function runOnce(node: TroupeNode, mod: CrewModule, db: string, input: string, signal: AbortSignal): Promise<CallToolResult> {
  const run = await node.run(mod.definition, { input, source: mod.path });
  // A run waiting for a human cannot be answered inside this call: it is checkpointed and
  // parked, and the caller is told how to decide it.
  const parked = new Promise<Extract<RunEvent, { type: 'approval.requested' }>>((resolve) =>
    run.subscribe((event) => event.type === 'approval.requested' && resolve(event)),
  );
  const cancelled = new Promise<'cancelled'>((resolve) => {
    if (signal.aborted) resolve('cancelled');
    signal.addEventListener('abort', () => resolve('cancelled'), { once: true });
  });
  const outcome = await Promise.race([run.settled(), parked, cancelled]);
  if (outcome === 'cancelled') {
    // The caller gave up: keep the run resumable (`troupe resume <id>`), do not finish it.
    await run.stop();
    return text(`run ${run.id} was cancelled by the caller; it is checkpointed (${resumeHint(run.id, db)})`, true);
  }
  if ('type' in outcome) {
    await run.stop();
    return text(
      `run ${run.id} is waiting for approval ${outcome.approvalId}: ${outcome.actor} wants to run ${outcome.tool} (${outcome.reason}): ${outcome.message}. ` +
        `Decide it from a shell (this server then continues the run): ${decideHint(outcome.approvalId, db)}`,
      true,
    );
  }
  const result: RunResult = outcome;
  if (result.status === 'completed') return text(typeof result.output === 'string' ? result.output : JSON.stringify(result.output));
  const error = result.error;
  return text(`run ${run.id} failed: ${error ? `${error.code ? `[${error.code}] ` : ''}${error.message}` : 'unknown error'}`, true);
}

export async function serve(mod: CrewModule, opts: ServeOptions): Promise<number> {
  let sdk;
  try {
    sdk = await Promise.all([
      import('@modelcontextprotocol/sdk/server/mcp.js'),
      import('@modelcontextprotocol/sdk/server/stdio.js'),
      import('@modelcontextprotocol/sdk/server/streamableHttp.js'),
      import('@modelcontextprotocol/sdk/types.js'),
    ]);
  } catch (cause) {
    throw new TroupeError(ErrorCode.MCP_CONNECT_FAILED, '`troupe mcp serve` needs the optional dependency @modelcontextprotocol/sdk (npm install @modelcontextprotocol/sdk)', { cause });
  }
  const [{ McpServer }, { StdioServerTransport }, { StreamableHTTPServerTransport }, { isInitializeRequest }] = sdk;

  await using storage = await openStorage(opts.db, { create: true, leaseMs: opts.leaseMs });
  // Not resumed: a run left by an earlier server has no caller waiting for its answer.
  const nodeId = nodeIdFor(storage, undefined);
  await using node = await createNode({ storage, models: mod.models, crews: [mod.definition], resume: false, ...(nodeId ? { nodeId } : {}) });
  // Other commands (runs, approvals, approve) reach the database through this server meanwhile.
  await using _control = await serveControlSocket({ db: opts.db, node, storage }, (message) => process.stderr.write(`troupe: warning: ${message}\n`));
  const name = toolName(mod.definition.id);

  const buildServer = (): McpServer => {
    const server = new McpServer({ name: `troupe-${name}`, version: mod.definition.version });
    server.registerTool(
      name,
      {
        description: `Runs the Troupe crew "${mod.definition.id}" (agents: ${mod.definition.actorIds.join(', ')}) on a task and returns its final output.`,
        inputSchema: { input: z.string().min(1).describe('The task for the crew') },
        annotations: { openWorldHint: true },
      },
      async ({ input }, extra) => runOnce(node, mod, opts.db, input, extra.signal),
    );
    return server;
  };

  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  process.once('SIGINT', () => stop());
  process.once('SIGTERM', () => stop());

  if (!opts.http) {
    // stdout is the protocol: everything else goes to stderr.
    const server = buildServer();
    const transport = new StdioServerTransport();
    transport.onclose = () => stop();
    // The client closing our stdin is the end of the session.
    process.stdin.once('end', () => stop());
    await server.connect(transport);
    process.stderr.write(`troupe: serving crew "${mod.definition.id}" as MCP tool "${name}" over stdio\n`);
    await stopped;
    await server.close();
    return 0;
  }

  const { host, port } = opts.http;
  const loopback = host === '127.0.0.1' || host === 'localhost' || host === '::1';
  const sessions = new Map<string, StreamableHTTPServerTransport>();
  /** Filled once the port is known, before the first request can arrive. */
  const allowedHosts: string[] = [];
  const reply = (res: ServerResponse, status: number, message: string) =>
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message }, id: null }));

  const readBody = async (req: IncomingMessage): Promise<unknown> => {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY_BYTES) throw new RangeError('request body too large');
      chunks.push(chunk as Buffer);
    }
    const body = Buffer.concat(chunks).toString('utf8');
    return body ? (JSON.parse(body) as unknown) : undefined;
  };

  const httpServer = createServer((req, res) => {
    void (async () => {
      if (new URL(req.url ?? '/', 'http://localhost').pathname !== '/mcp') return reply(res, 404, 'not found: the MCP endpoint is /mcp');
      let body: unknown;
      try {
        body = req.method === 'POST' ? await readBody(req) : undefined;
      } catch (error) {
        return reply(res, error instanceof RangeError ? 413 : 400, error instanceof RangeError ? 'request body too large' : 'request body is not JSON');
      }
      const sid = req.headers['mcp-session-id'];
      let transport = typeof sid === 'string' ? sessions.get(sid) : undefined;
      if (!transport) {
        if (sid !== undefined) return reply(res, 404, 'unknown session');
        if (req.method !== 'POST' || !isInitializeRequest(body)) return reply(res, 400, 'start a session with an initialize request');
        // One MCP server per session, as the SDK expects; they share the node.
        const created: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (id) => void sessions.set(id, created),
          onsessionclosed: (id) => void sessions.delete(id),
          // A page in a browser must not reach a loopback server through a rebound DNS name.
          ...(loopback ? { enableDnsRebindingProtection: true, allowedHosts } : {}),
        });
        created.onclose = () => {
          if (created.sessionId) sessions.delete(created.sessionId);
        };
        await buildServer().connect(created);
        transport = created;
      }
      await transport.handleRequest(req, res, body);
    })().catch((error: unknown) => {
      process.stderr.write(`troupe: MCP request failed: ${(error as Error)?.message ?? String(error)}\n`);
      if (!res.headersSent) reply(res, 500, 'internal error');
    });
  });
  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', (cause) => reject(new TroupeError(ErrorCode.LISTEN_FAILED, `cannot listen on ${host}:${port}: ${cause.message}`, { cause })));
    httpServer.listen(port, host, () => resolve());
  });
  const bound = (httpServer.address() as AddressInfo).port;
  const shown = host.includes(':') ? `[${host}]` : host;
  allowedHosts.push(...new Set([`${shown}:${bound}`, `localhost:${bound}`, `127.0.0.1:${bound}`, `[::1]:${bound}`]));
  process.stdout.write(`listening on http://${shown}:${bound}/mcp (crew "${mod.definition.id}" as MCP tool "${name}")\n`);
  await stopped;
  await Promise.allSettled([...sessions.values()].map((t) => t.close()));
  httpServer.closeAllConnections();
  await new Promise<void>((resolve) => httpServer.close(() => resolve()));
  return 0;
}
