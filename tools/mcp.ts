/**
 * Tools from an MCP server: {@link mcpTools} connects to a server (a child process over stdio,
 * or a URL over Streamable HTTP) with the official `@modelcontextprotocol/sdk` client, lists
 * its tools and turns each into a Troupe {@link Tool}.
 *
 * The SDK is an optional peer dependency: only this entry point (`troupe/mcp`) needs it, and it
 * is imported when a connection is first made, so `troupe` and the CLI load without it.
 * @module
 */
import { createHash } from 'node:crypto';
import type { z } from 'zod';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult, ContentBlock, Tool as McpToolInfo } from '@modelcontextprotocol/sdk/types.js';
import { ErrorCode, isTroupeError, TroupeError } from '../core/errors.js';
import { NAME } from '../core/ids.js';
import { createRedactor, envSecrets, resolveSecrets, type SecretsProvider } from '../core/secrets.js';
import { tool, type Tool, type ToolContext, type ToolEffect } from '../core/tool.js';
import { jsonSchemaToZod } from './json-schema.js';

/** A credential named in a connection option, resolved from the node's secrets provider per call. */
export interface SecretRef {
  readonly kind: 'secret';
  readonly name: string;
  /** Turns the secret's value into what is sent (`(v) => \`Bearer ${v}\``); the value as is by default. */
  readonly format: (value: string) => string;
}

/**
 * Names a secret for a header or an environment variable of an MCP connection. The tools
 * declare it in their `secrets`, so the node resolves it at call time and scrubs it from
 * everything it persists; the crew definition holds only the name.
 *
 * @example
 * mcpTools({ url, headers: { Authorization: secret('MCP_TOKEN', (v) => `Bearer ${v}`) } });
 */
export function secret(name: string, format: (value: string) => string = (v) => v): SecretRef {
  if (typeof name !== 'string' || name.length === 0) throw new TypeError('secret(name) needs the name of a secret');
  if (typeof format !== 'function') throw new TypeError(`secret("${name}", format): format must be a function`);
  return Object.freeze({ kind: 'secret', name, format });
}

/** A connection setting: a literal (not secret) or a {@link SecretRef}. */
export type McpSetting = string | SecretRef;

/** A server started as a child process and spoken to over its stdin/stdout. */
export interface McpStdioServer {
  command: string;
  args?: readonly string[];
  /**
   * Environment of the child, on top of the SDK's safe defaults (`HOME`, `PATH`, `SHELL`,
   * `TERM`, `USER`, `LOGNAME`): the rest of this process's environment is not passed on.
   */
  env?: Readonly<Record<string, McpSetting>>;
  cwd?: string;
  /** The child's stderr: this process's (`'inherit'`, the default) or discarded. */
  stderr?: 'inherit' | 'ignore';
}

/** A server reached over Streamable HTTP. */
export interface McpHttpServer {
  url: string | URL;
  /** Sent with every request (`Authorization`, API keys). */
  headers?: Readonly<Record<string, McpSetting>>;
}

/** Where the MCP server is. */
export type McpServerConfig = McpStdioServer | McpHttpServer;

/** How Troupe treats one MCP tool (or, as `defaults`, all of them). */
export interface McpToolSettings {
  /** Default `irreversible`: nothing is known of what a server's tool does. `compensatable` is refused (MCP has no undo). */
  effect?: Exclude<ToolEffect, 'compensatable'>;
  /** Default `['mcp:<server>:<tool>']`. Replaces the default when given. */
  scopes?: readonly string[];
  /** Default `true`: a human approves every call, whatever the agent's policy. */
  ask?: boolean;
}

/** Settings of one tool: {@link McpToolSettings} plus what only one tool can have. */
export interface McpToolOverride extends McpToolSettings {
  /** The Troupe tool name (default: `prefix` + the MCP name, characters providers reject replaced by `_`). */
  name?: string;
  /** Replaces the server's description for the model. */
  description?: string;
  /**
   * Your own argument schema, for a tool whose JSON Schema the validator refuses: the model
   * then sees this schema instead of the server's.
   */
  input?: z.ZodType;
}

/** Options of {@link mcpTools}. */
export interface McpToolsOptions {
  /** The server's name in default scopes and messages (default: the name it reports). */
  name?: string;
  /** Prepended to every tool name, to keep two servers' tools apart (`gh_`). */
  prefix?: string;
  /** Only these tools (MCP names); the others are not offered. Default: all. */
  include?: readonly string[];
  /** Settings for every tool; `tools` overrides them per tool. */
  defaults?: McpToolSettings;
  /** Per-tool settings by MCP tool name. */
  tools?: Readonly<Record<string, McpToolOverride>>;
  /**
   * Resolves the credentials of the first connection, made now to list the tools (calls use
   * the node's provider). Pass the provider you give `createNode`; default `envSecrets()`.
   */
  secrets?: SecretsProvider;
  /** Per-call timeout in milliseconds (default the SDK's, 60 s). */
  timeoutMs?: number;
  /** Aborts connecting and listing. */
  signal?: AbortSignal;
}

/** Lifecycle of an {@link McpToolset}'s connection. */
export type McpToolsetStatus = 'connecting' | 'connected' | 'disconnected' | 'closed';

/** The tools of one MCP server and the connection they share. */
export interface McpToolset extends AsyncDisposable {
  /** One Troupe tool per MCP tool offered. */
  readonly tools: Tool[];
  /** The server as it introduced itself. */
  readonly server: { readonly name: string; readonly version: string };
  /**
   * `connected` with a live connection; `disconnected` when it ended (the server exited) or
   * was dropped, the next call connects again; `closed` after {@link close}.
   */
  readonly status: McpToolsetStatus;
  /**
   * Closes the connection: ends the child process or terminates the HTTP session. Calls
   * after it fail (as tool errors). Idempotent; also `await using`.
   */
  close(): Promise<void>;
}

type Sdk = {
  Client: typeof import('@modelcontextprotocol/sdk/client/index.js').Client;
  StdioClientTransport: typeof import('@modelcontextprotocol/sdk/client/stdio.js').StdioClientTransport;
  StreamableHTTPClientTransport: typeof import('@modelcontextprotocol/sdk/client/streamableHttp.js').StreamableHTTPClientTransport;
};

let sdk: Promise<Sdk> | undefined;

/** The SDK, imported on first use: users who never connect to MCP need not install it. */
function loadSdk(): Promise<Sdk> {
  sdk ??= Promise.all([
    import('@modelcontextprotocol/sdk/client/index.js'),
    import('@modelcontextprotocol/sdk/client/stdio.js'),
    import('@modelcontextprotocol/sdk/client/streamableHttp.js'),
  ]).then(
    ([c, s, h]) => ({ Client: c.Client, StdioClientTransport: s.StdioClientTransport, StreamableHTTPClientTransport: h.StreamableHTTPClientTransport }),
    (cause: unknown) => {
      sdk = undefined;
      throw new TroupeError(ErrorCode.MCP_CONNECT_FAILED, 'MCP tools need the optional peer dependency @modelcontextprotocol/sdk (npm install @modelcontextprotocol/sdk)', { cause, details: { reason: 'sdk-missing' } });
    },
  );
  return sdk;
}

const isSecret = (v: unknown): v is SecretRef => typeof v === 'object' && v !== null && (v as SecretRef).kind === 'secret';

/** One live client, with the credentials it was opened with (as a hash, for comparison). */
interface Connection {
  client: Client;
  close(): Promise<void>;
  key: string;
  inFlight: number;
  /** Set when a newer connection replaced this one: close once its calls are done. */
  retired: boolean;
}

// Every open toolset of the process, across copies of this module (a crew module importing
// `troupe/mcp` and the CLI importing this file may load it twice): `closeMcpToolsets` closes them.
const OPEN_KEY = Symbol.for('troupe.mcp.openToolsets');
const open: Set<McpToolset> = ((globalThis as Record<symbol, unknown>)[OPEN_KEY] ??= new Set<McpToolset>()) as Set<McpToolset>;

/**
 * Closes every MCP toolset this process opened and has not closed. The CLI calls it after each
 * command, so a crew module's MCP servers do not keep `troupe run` from exiting.
 */
export async function closeMcpToolsets(): Promise<void> {
  await Promise.allSettled([...open].map((t) => t.close()));
}

const SCOPE_SEGMENT_BAD = /[\s:*\p{Cc}]/gu;

/**
 * Connects to an MCP server, lists its tools and returns them as Troupe tools sharing one
 * connection. Each tool validates its arguments against the server's JSON Schema (exactly, or
 * the toolset is refused with `SCHEMA_UNSUPPORTED`; see `tools/json-schema.ts`), is
 * `irreversible` and asks a human before every call unless you narrow it, and declares the
 * secrets named in `headers`/`env` so the node resolves them per call and scrubs them from what
 * it persists. A call made with other credential values than the connection's (a rotated
 * token) opens a new connection with them. A result's text becomes the tool result, its
 * `structuredContent` a JSON result, an `isError` result a tool error the model reads.
 *
 * Throws `MCP_CONNECT_FAILED` when the server cannot be reached or listed, `SCHEMA_UNSUPPORTED`
 * for a tool schema it cannot validate faithfully (leave the tool out with `include`, or give
 * `tools.<name>.input`), and a `TypeError` for a misconfiguration (unknown tool names, a
 * `compensatable` effect, two tools with one name).
 *
 * @example
 * import { createNode, agent, crew, envSecrets } from 'troupe';
 * import { mcpTools, secret } from 'troupe/mcp';
 *
 * const secrets = envSecrets();
 * await using docs = await mcpTools(
 *   { url: 'https://mcp.example.com/mcp', headers: { Authorization: secret('DOCS_TOKEN', (v) => `Bearer ${v}`) } },
 *   { secrets, prefix: 'docs_', tools: { search: { effect: 'read', scopes: ['docs:read'], ask: false } } },
 * );
 * await using files = await mcpTools({ command: 'npx', args: ['-y', '@modelcontextprotocol/server-filesystem', './data'] });
 * const researcher = agent({ id: 'researcher', role: '…', instructions: '…', model: 'scripted', tools: [...docs.tools, ...files.tools] });
 * await using node = await createNode({ storage, models, secrets });
 */
export async function mcpTools(server: McpServerConfig, options: McpToolsOptions = {}): Promise<McpToolset> {
  const config = checkServer(server);
  const settings = options.tools ?? {};
  const defaults = options.defaults ?? {};
  checkSettings('defaults', defaults);
  for (const [name, s] of Object.entries(settings)) checkSettings(`tools.${name}`, s);
  if (options.timeoutMs !== undefined && !(Number.isFinite(options.timeoutMs) && options.timeoutMs > 0)) throw new TypeError('mcpTools({ timeoutMs }) must be a positive number');

  const entries = Object.entries(('url' in config ? config.headers : config.env) ?? {});
  const secretNames = [...new Set(entries.flatMap(([, v]) => (isSecret(v) ? [v.name] : [])))];
  /** What is sent, with the secrets' values in place. */
  const materialize = (values: Readonly<Record<string, string>>): Record<string, string> =>
    Object.fromEntries(entries.map(([k, v]) => [k, isSecret(v) ? v.format(requireValue(values, v.name)) : v]));

  const { Client, StdioClientTransport, StreamableHTTPClientTransport } = await loadSdk();
  let status: McpToolsetStatus = 'connecting';
  let serverName = options.name ?? 'mcp';
  let serverInfo = { name: serverName, version: '' };
  /** The connection calls use: being opened (`pending`), then open (`connection`). */
  let current: { key: string; pending: Promise<Connection>; connection?: Connection } | undefined;
  const live = new Set<Connection>();
  let closing: Promise<void> | undefined;

  const closed = () => new TroupeError(ErrorCode.TOOL_FAILED, `the MCP connection to "${serverName}" is closed`, { details: { reason: 'mcp-closed' } });

  /** Closes a connection once no call uses it any more. */
  const retire = (connection: Connection) => {
    connection.retired = true;
    if (current?.connection === connection) {
      current = undefined;
      if (status !== 'closed') status = 'disconnected';
    }
    if (connection.inFlight === 0) void connection.close().catch(() => {});
  };

  const connect = async (settingValues: Record<string, string>, key: string, signal: AbortSignal): Promise<Connection> => {
    const client = new Client({ name: 'troupe', version: '0.1.0' });
    let endSession = async () => {};
    let transport;
    if ('url' in config) {
      const http = new StreamableHTTPClientTransport(new URL(config.url), { requestInit: { headers: settingValues } });
      // The session is ended on the server (DELETE), not just forgotten here.
      endSession = () => http.terminateSession().catch(() => {});
      transport = http;
    } else {
      transport = new StdioClientTransport({
        command: config.command,
        args: [...(config.args ?? [])],
        env: settingValues,
        stderr: config.stderr ?? 'inherit',
        ...(config.cwd !== undefined ? { cwd: config.cwd } : {}),
      });
    }
    let closingThis: Promise<void> | undefined;
    const connection: Connection = {
      client,
      key,
      inFlight: 0,
      retired: false,
      close: () => {
        closingThis ??= (async () => {
          await endSession();
          // For stdio: ends the child's stdin, then SIGTERM, then SIGKILL, and waits for it to exit.
          await client.close();
        })().finally(() => live.delete(connection));
        return closingThis;
      },
    };
    // Kept until closed, so the toolset's close() also waits for connections being retired.
    live.add(connection);
    // The server went away (the child exited): the next call connects again.
    client.onclose = () => {
      if (current?.connection === connection) retire(connection);
      void connection.close().catch(() => {});
    };
    try {
      await client.connect(transport, { signal, ...(options.timeoutMs ? { timeout: options.timeoutMs } : {}) });
    } catch (cause) {
      await connection.close().catch(() => {});
      const where = 'url' in config ? String(config.url) : config.command;
      throw new TroupeError(ErrorCode.MCP_CONNECT_FAILED, `cannot connect to the MCP server ${where}: ${(cause as Error)?.message ?? String(cause)}`, {
        cause,
        details: { reason: 'connect-failed', server: where },
      });
    }
    return connection;
  };

  /** The connection for these credential values: the current one, or a new one replacing it. */
  const acquire = async (values: Readonly<Record<string, string>>, signal: AbortSignal): Promise<Connection> => {
    if (status === 'closed') throw closed();
    const settingValues = materialize(values);
    // Only a hash of the credentials is kept, for the comparison.
    const key = createHash('sha256').update(JSON.stringify(settingValues)).digest('hex');
    if (current?.key !== key) {
      const previous = current;
      const pending = connect(settingValues, key, signal);
      const entry: NonNullable<typeof current> = { key, pending };
      current = entry;
      status = 'connecting';
      pending.then(
        (connection) => {
          if (current !== entry) return;
          entry.connection = connection;
          if (status === 'connecting') status = 'connected';
        },
        () => {
          if (current !== entry) return;
          current = undefined;
          if (status === 'connecting') status = 'disconnected';
        },
      );
      // The old credentials' connection finishes the calls it has, then closes.
      if (previous) void previous.pending.then(retire, () => {});
    }
    const connection = await current!.pending;
    // close() may have run while this call waited for the connection.
    if ((status as McpToolsetStatus) === 'closed') throw closed();
    return connection;
  };

  const close = () => {
    closing ??= (async () => {
      status = 'closed';
      open.delete(toolset);
      const pending = current?.pending;
      current = undefined;
      // A connection still being opened is in `live` already; wait for it to settle first.
      await pending?.catch(() => undefined);
      await Promise.allSettled([...live].map((c) => c.close()));
    })();
    return closing;
  };

  const toolset: McpToolset = {
    tools: [],
    get server() {
      return serverInfo;
    },
    get status() {
      return status;
    },
    close,
    [Symbol.asyncDispose]: close,
  };

  // The first connection, with credentials from the given provider: it lists the tools and
  // serves the calls for as long as the node resolves the same values.
  // Registered first, so closeMcpToolsets() also ends a toolset still being built.
  open.add(toolset);
  try {
    const signal = options.signal ?? new AbortController().signal;
    const values = secretNames.length > 0 ? await resolveSecrets(options.secrets ?? envSecrets(), secretNames, signal) : {};
    const connection = await acquire(values, signal).catch((error: unknown) => {
      throw scrub(error, Object.values(values));
    });
    const reported = connection.client.getServerVersion();
    serverName = options.name ?? reported?.name ?? serverName;
    serverInfo = { name: reported?.name ?? serverName, version: reported?.version ?? '' };
    const listed = await listAll(connection.client, signal, options.timeoutMs).catch((cause: unknown) => {
      throw scrub(new TroupeError(ErrorCode.MCP_CONNECT_FAILED, `cannot list the tools of MCP server "${serverName}": ${(cause as Error)?.message ?? String(cause)}`, { details: { reason: 'list-failed', server: serverName } }), Object.values(values));
    });
    toolset.tools.push(...buildTools(listed));
  } catch (error) {
    await close();
    throw error;
  }
  return toolset;

  function buildTools(available: McpToolInfo[]): Tool[] {
    const names = new Set(available.map((t) => t.name));
    const unknown = [...(options.include ?? []), ...Object.keys(settings)].filter((n) => !names.has(n));
    if (unknown.length > 0) throw new TypeError(`mcpTools: server "${serverName}" has no tool ${unknown.map((n) => `"${n}"`).join(', ')}; it has ${[...names].join(', ') || 'none'}`);
    const chosen = options.include ? available.filter((t) => options.include!.includes(t.name)) : available;
    const built = chosen.map((info) => buildTool(info, { ...defaults, ...settings[info.name] }));
    const seen = new Map<string, string>();
    for (const [i, t] of built.entries()) {
      const other = seen.get(t.name);
      if (other !== undefined) throw new TypeError(`mcpTools: MCP tools "${other}" and "${chosen[i]!.name}" would both be called "${t.name}"; rename one with tools.<name>.name`);
      seen.set(t.name, chosen[i]!.name);
    }
    return built;
  }

  function buildTool(info: McpToolInfo, s: McpToolOverride): Tool {
    const name = s.name ?? `${options.prefix ?? ''}${info.name}`.replace(/[^A-Za-z0-9_-]/g, '_');
    let input: z.ZodType;
    try {
      input = s.input ?? jsonSchemaToZod(info.inputSchema);
    } catch (error) {
      if (!isTroupeError(error, ErrorCode.SCHEMA_UNSUPPORTED)) throw error;
      throw new TroupeError(ErrorCode.SCHEMA_UNSUPPORTED, `MCP tool "${info.name}" of "${serverName}": ${error.message}; leave it out with include, or give tools.${info.name}.input`, {
        cause: error,
        details: { ...error.details, tool: info.name, server: serverName },
      });
    }
    const description = s.description ?? info.description ?? info.title ?? `${info.name} (a tool of the MCP server "${serverName}")`;
    if (!NAME.test(name)) {
      throw new TypeError(`mcpTools: MCP tool "${info.name}" would be called "${name}", which providers reject (a letter, then up to 63 letters, digits, _ or -); name it with tools.${info.name}.name`);
    }
    const built = tool({
      name,
      description,
      input,
      effect: s.effect ?? 'irreversible',
      scopes: s.scopes ?? [`mcp:${serverName.replace(SCOPE_SEGMENT_BAD, '_')}:${info.name.replace(SCOPE_SEGMENT_BAD, '_')}`],
      secrets: secretNames,
      ...((s.ask ?? true) ? { approval: 'ask' as const } : {}),
      run: (args: unknown, context: ToolContext) => call(info.name, args, context),
    });
    if (s.input) return built;
    // The model sees the server's own schema, not the pass-through zod wrapper's `{}`.
    const { $schema: _dialect, ...inputSchema } = info.inputSchema as Record<string, unknown>;
    return { ...built, spec: { name, description, inputSchema } };
  }

  async function call(mcpName: string, args: unknown, context: ToolContext): Promise<unknown> {
    const connection = await acquire(context.secrets, context.signal);
    connection.inFlight++;
    let result: CallToolResult;
    try {
      result = (await connection.client.callTool({ name: mcpName, arguments: args as Record<string, unknown> }, undefined, {
        signal: context.signal,
        ...(options.timeoutMs ? { timeout: options.timeoutMs } : {}),
      })) as CallToolResult;
    } catch (cause) {
      context.signal.throwIfAborted();
      // A server that forgot the session (it restarted) answers 404: connect afresh next time.
      if ((cause as { code?: unknown })?.code === 404) retire(connection);
      throw new TroupeError(ErrorCode.TOOL_FAILED, `MCP tool "${mcpName}" of "${serverName}" failed: ${(cause as Error)?.message ?? String(cause)}`, {
        cause,
        details: { reason: 'mcp-request-failed', server: serverName, tool: mcpName },
      });
    } finally {
      connection.inFlight--;
      if (connection.retired && connection.inFlight === 0) void connection.close().catch(() => {});
    }
    return toToolResult(result, mcpName);
  }
}

/**
 * An error with every credential value scrubbed from its message and details (a server may
 * echo a header back in its error page). Its cause is dropped: it could quote them too.
 */
function scrub(error: unknown, values: readonly string[]): unknown {
  if (values.length === 0) return error;
  const redact = createRedactor(values);
  const message = redact(error instanceof Error ? error.message : String(error));
  if (isTroupeError(error)) return new TroupeError(error.code, message, { details: redact(error.details) });
  return new TroupeError(ErrorCode.MCP_CONNECT_FAILED, message);
}

function requireValue(values: Readonly<Record<string, string>>, name: string): string {
  const value = values[name];
  // The executor resolves every declared secret before the tool runs; absent means misuse.
  if (value === undefined) throw new TroupeError(ErrorCode.TOOL_FAILED, `secret "${name}" was not resolved for this MCP call`, { details: { reason: 'secret-missing', secret: name } });
  return value;
}

async function listAll(client: Client, signal: AbortSignal, timeoutMs: number | undefined): Promise<McpToolInfo[]> {
  const tools: McpToolInfo[] = [];
  let cursor: string | undefined;
  // A server whose cursors never end must not hang the build: 1000 pages is far past any real one.
  for (let page = 0; page < 1000; page++) {
    const result = await client.listTools(cursor ? { cursor } : {}, { signal, ...(timeoutMs ? { timeout: timeoutMs } : {}) });
    tools.push(...result.tools);
    cursor = result.nextCursor;
    if (!cursor) return tools;
  }
  throw new Error('the server kept returning more pages of tools');
}

/** A content block as the model can read it: binary data is described, not inlined. */
function describeBlock(block: ContentBlock): unknown {
  switch (block.type) {
    case 'text':
      return { type: 'text', text: block.text };
    case 'image':
    case 'audio':
      return { type: block.type, mimeType: block.mimeType, bytes: Math.floor((block.data.length * 3) / 4) };
    case 'resource':
      return 'text' in block.resource
        ? { type: 'resource', uri: block.resource.uri, ...(block.resource.mimeType ? { mimeType: block.resource.mimeType } : {}), text: block.resource.text }
        : { type: 'resource', uri: block.resource.uri, ...(block.resource.mimeType ? { mimeType: block.resource.mimeType } : {}), bytes: Math.floor((block.resource.blob.length * 3) / 4) };
    case 'resource_link':
      return { type: 'resource_link', uri: block.uri, name: block.name, ...(block.mimeType ? { mimeType: block.mimeType } : {}), ...(block.description ? { description: block.description } : {}) };
    default:
      return { type: (block as { type: string }).type };
  }
}

/**
 * An MCP result as a Troupe tool result: `structuredContent` when the server gave one (the
 * text blocks then repeat it, by the spec's advice), the text when every block is text, else
 * the blocks described. An error result throws, so the model reads it as a tool error.
 */
function toToolResult(result: CallToolResult, mcpName: string): unknown {
  const blocks = result.content ?? [];
  const text = blocks.every((b) => b.type === 'text') ? blocks.map((b) => (b as { text: string }).text).join('\n') : undefined;
  if (result.isError) {
    const message = text ?? JSON.stringify(blocks.map(describeBlock));
    throw new TroupeError(ErrorCode.TOOL_FAILED, message || `MCP tool "${mcpName}" reported an error`, { details: { reason: 'mcp-tool-error', tool: mcpName } });
  }
  if (result.structuredContent !== undefined) return result.structuredContent;
  if (text !== undefined) return text;
  return blocks.map(describeBlock);
}

function checkServer(server: McpServerConfig): McpServerConfig {
  if (typeof server !== 'object' || server === null) throw new TypeError('mcpTools(server) needs { command, args?, env?, cwd? } or { url, headers? }');
  const settingsOf = (what: string, record: unknown) => {
    if (record === undefined) return;
    if (typeof record !== 'object' || record === null) throw new TypeError(`mcpTools: ${what} must be an object`);
    for (const [k, v] of Object.entries(record)) {
      if (typeof v !== 'string' && !isSecret(v)) throw new TypeError(`mcpTools: ${what}.${k} must be a string or secret('NAME')`);
    }
  };
  if ('url' in server) {
    if ('command' in server) throw new TypeError('mcpTools: give either command (stdio) or url (Streamable HTTP), not both');
    let url: URL;
    try {
      url = new URL(server.url);
    } catch {
      throw new TypeError(`mcpTools: url ${JSON.stringify(String(server.url))} is not a URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError('mcpTools: url must be http: or https:');
    settingsOf('headers', server.headers);
    return server;
  }
  if (typeof (server as McpStdioServer).command !== 'string' || (server as McpStdioServer).command.length === 0) throw new TypeError('mcpTools(server) needs a command (stdio) or a url (Streamable HTTP)');
  const stdio = server as McpStdioServer;
  if (stdio.args !== undefined && !(Array.isArray(stdio.args) && stdio.args.every((a) => typeof a === 'string'))) throw new TypeError('mcpTools: args must be an array of strings');
  if (stdio.stderr !== undefined && stdio.stderr !== 'inherit' && stdio.stderr !== 'ignore') throw new TypeError("mcpTools: stderr must be 'inherit' or 'ignore'");
  settingsOf('env', stdio.env);
  return stdio;
}

function checkSettings(where: string, s: McpToolOverride): void {
  if (typeof s !== 'object' || s === null) throw new TypeError(`mcpTools: ${where} must be an object`);
  if ((s.effect as string) === 'compensatable') throw new TypeError(`mcpTools: ${where}.effect cannot be 'compensatable': an MCP tool has no undo; use 'irreversible' (or 'idempotent' if the server deduplicates)`);
  if (s.ask !== undefined && typeof s.ask !== 'boolean') throw new TypeError(`mcpTools: ${where}.ask must be a boolean`);
}
