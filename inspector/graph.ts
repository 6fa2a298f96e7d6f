import type { AnyStateMachine } from 'xstate';
import { agent } from '../actors/agent.js';
import { crew } from '../actors/crew.js';
import { systemClock } from '../core/clock.js';
import { ROOT_ACTOR_ID } from '../core/node.js';
import type { ActorRuntime, RunnableDefinition } from '../core/runtime.js';

/**
 * One drawable state, named by its dotted path (`running.active`). Compound and parallel
 * states are boxes holding their children (`parent` names the box a state is drawn in).
 */
export interface GraphNode {
  id: string;
  /** The state's own key (`active`), what its box is labelled with. */
  label: string;
  /** The enclosing state's id; `null` at the top of the machine. */
  parent: string | null;
  kind: 'atomic' | 'compound' | 'parallel' | 'final' | 'any';
  /** Ids of the actors the state invokes while in it (`model`, `tools`, `backoff`). */
  invokes: string[];
  /** Top-left corner and size of the state's box, in the graph's coordinate space (absolute). */
  x: number;
  y: number;
  width: number;
  height: number;
}

/** One transition as declared: from the state that declares it to its target state (either may be a box). */
export interface GraphEdge {
  id: string;
  /** {@link ANY_STATE} for transitions declared on the machine itself. */
  from: string;
  to: string;
  /** Readable event: `envelope`, `model done`, `tools error`, `always`, `after 200 ms`. */
  event: string;
  guard?: string;
  /** The routed line, absolute: start, bends, end. */
  points: Array<{ x: number; y: number }>;
  /** Where the event's label sits, absolute. */
  label: { x: number; y: number; width: number; height: number } | null;
}

/** A state machine as plain data, laid out by elkjs (layered, left to right); what the inspector page draws. */
export interface MachineGraph {
  machine: string;
  /** The leaf a fresh actor starts in. */
  initial: string;
  /** Every state, a box before the states inside it. */
  nodes: GraphNode[];
  edges: GraphEdge[];
  width: number;
  height: number;
}

/** The pseudo-state standing for "any state" (transitions declared on the machine itself). */
export const ANY_STATE = '*';

// Sizes for a 12px monospace label (7.2px a character) and an 11px edge label.
const CHAR_W = 7.2;
const LABEL_CHAR_W = 6.4;
const NODE_H = 30;
const BOX_TOP = 26;

/** The parts of an XState v5 state node this module reads (all public API). */
interface StateNodeLike {
  path: string[];
  type: 'atomic' | 'compound' | 'parallel' | 'final' | 'history';
  order: number;
  states: Record<string, StateNodeLike>;
  transitions: Map<string, TransitionLike[]>;
  always?: TransitionLike[];
  invoke: Array<{ id: string; src: unknown }>;
  initial: { target: readonly StateNodeLike[] };
}
interface TransitionLike {
  eventType: string;
  target?: readonly StateNodeLike[];
  guard?: unknown;
}

const isMachine = (logic: unknown): logic is AnyStateMachine =>
  typeof logic === 'object' && logic !== null && 'root' in logic && typeof (logic as { root?: { states?: unknown } }).root?.states === 'object';

const pathOf = (node: StateNodeLike) => node.path.join('.');

/** The leaf a transition into `node` lands on (initial children, first region of a parallel). */
function entryLeaf(node: StateNodeLike): StateNodeLike {
  if (node.type === 'compound') return entryLeaf(node.initial.target[0] ?? Object.values(node.states)[0]!);
  if (node.type === 'parallel') return entryLeaf(Object.values(node.states)[0]!);
  return node;
}

function eventLabel(type: string): string {
  if (type === '') return 'always';
  const done = /^xstate\.(done|error)\.actor\.(.+)$/.exec(type);
  if (done) return `${done[2]} ${done[1] === 'done' ? 'done' : 'error'}`;
  const after = /^xstate\.after\.(\d+)\./.exec(type);
  if (after) return `after ${after[1]} ms`;
  if (type.startsWith('xstate.done.state.')) return 'region done';
  return type === 'troupe.envelope' ? 'envelope' : type;
}

function guardLabel(guard: unknown): string | undefined {
  if (guard === undefined) return undefined;
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'function') return guard.name || 'guard';
  return String((guard as { type?: unknown }).type ?? 'guard');
}

const edgeText = (e: { event: string; guard?: string }) => (e.guard ? `${e.event} [${e.guard}]` : e.event);

interface ElkNode {
  id: string;
  width?: number;
  height?: number;
  x?: number;
  y?: number;
  children?: ElkNode[];
  labels?: Array<{ text: string; width: number; height: number }>;
  layoutOptions?: Record<string, string>;
}
interface ElkEdge {
  id: string;
  sources: string[];
  targets: string[];
  labels?: Array<{ text: string; width: number; height: number; x?: number; y?: number }>;
  sections?: Array<{ startPoint: { x: number; y: number }; endPoint: { x: number; y: number }; bendPoints?: Array<{ x: number; y: number }> }>;
  container?: string;
}

let elk: { layout(graph: ElkNode & { edges: ElkEdge[] }): Promise<ElkNode & { edges: ElkEdge[] }> } | undefined;
/** elkjs, loaded on first use (its bundle is large; a process that draws nothing never loads it). */
async function elkEngine() {
  if (!elk) {
    const mod = (await import('elkjs/lib/elk.bundled.js')) as unknown as { default: { default?: new () => unknown } & (new () => unknown) };
    // A CommonJS module: its constructor is `default` (Node), or `default.default` (some loaders).
    const ELK = mod.default.default ?? mod.default;
    elk = new ELK() as typeof elk;
  }
  return elk!;
}

const ROOT_LAYOUT = {
  'elk.algorithm': 'layered',
  'elk.direction': 'RIGHT',
  // One layout across the hierarchy: edges between states of different boxes are routed too.
  'elk.hierarchyHandling': 'INCLUDE_CHILDREN',
  'elk.edgeRouting': 'ORTHOGONAL',
  'elk.layered.spacing.nodeNodeBetweenLayers': '36',
  'elk.spacing.nodeNode': '18',
  'elk.spacing.edgeLabel': '3',
  'elk.layered.considerModelOrder.strategy': 'NODES_AND_EDGES',
  'elk.padding': '[top=8,left=8,bottom=8,right=8]',
};

/**
 * Reads a machine's states and transitions into a serialisable graph and lays it out with
 * elkjs: compound and parallel states are boxes with their children inside, every
 * transition is drawn from the state that declares it to its target with its event (and
 * guard) as a label. Targetless transitions (actions only) change no state and are left out.
 */
export async function machineGraph(machine: AnyStateMachine): Promise<MachineGraph> {
  if (!isMachine(machine)) throw new TypeError('machineGraph(machine) needs an XState state machine');
  const root = machine.root as unknown as StateNodeLike;
  const nodes: Array<Omit<GraphNode, 'x' | 'y' | 'width' | 'height'>> = [];
  const edges: Array<Omit<GraphEdge, 'points' | 'label'>> = [];
  const seen = new Set<string>();
  const walk = (node: StateNodeLike, parent: string | null) => {
    const from = node === root ? ANY_STATE : pathOf(node);
    if (node !== root) {
      const kind = node.type === 'final' ? 'final' : node.type === 'parallel' ? 'parallel' : node.type === 'compound' ? 'compound' : 'atomic';
      nodes.push({ id: from, label: node.path.at(-1)!, parent, kind, invokes: node.invoke.map((i) => i.id) });
    }
    const transitions = [...node.transitions.values()].flat().concat(node.always ?? []);
    for (const t of transitions) {
      const target = t.target?.[0];
      if (!target) continue;
      const to = pathOf(target);
      const event = eventLabel(t.eventType ?? '');
      const guard = guardLabel(t.guard);
      const key = `${from}\u0000${to}\u0000${event}\u0000${guard}`;
      if (seen.has(key)) continue;
      seen.add(key);
      edges.push({ id: `e${edges.length}`, from, to, event, ...(guard ? { guard } : {}) });
    }
    const children = Object.values(node.states).filter((c) => c.type !== 'history').sort((a, b) => a.order - b.order);
    for (const child of children) walk(child, node === root ? null : from);
  };
  walk(root, null);
  if (edges.some((e) => e.from === ANY_STATE)) nodes.push({ id: ANY_STATE, label: 'any state', parent: null, kind: 'any', invokes: [] });

  // The elk graph: boxes nest their children; leaves are sized by their label.
  const elkNodes = new Map<string, ElkNode>();
  const top: ElkNode[] = [];
  for (const n of nodes) {
    const box = n.kind === 'compound' || n.kind === 'parallel';
    const labelWidth = Math.ceil(n.label.length * CHAR_W) + 24;
    const e: ElkNode = box
      ? { id: n.id, children: [], labels: [{ text: n.label, width: labelWidth, height: 14 }], layoutOptions: { 'elk.padding': `[top=${BOX_TOP},left=10,bottom=10,right=10]`, 'elk.nodeSize.constraints': 'MINIMUM_SIZE', 'elk.nodeSize.minimum': `(${labelWidth + 16},${NODE_H})` } }
      : { id: n.id, width: Math.max(64, labelWidth), height: NODE_H };
    elkNodes.set(n.id, e);
    (n.parent ? elkNodes.get(n.parent)!.children! : top).push(e);
  }
  const laid = await (await elkEngine()).layout({
    id: '__root',
    layoutOptions: ROOT_LAYOUT,
    children: top,
    edges: edges.map((e) => ({ id: e.id, sources: [e.from], targets: [e.to], labels: [{ text: edgeText(e), width: Math.ceil(edgeText(e).length * LABEL_CHAR_W) + 6, height: 13 }] })),
  });

  // elk gives coordinates relative to the enclosing box (edges: to their container); the page gets them absolute.
  const abs = new Map<string, { x: number; y: number; width: number; height: number }>([['__root', { x: 0, y: 0, width: laid.width ?? 0, height: laid.height ?? 0 }]]);
  const place = (list: ElkNode[] | undefined, ox: number, oy: number) => {
    for (const n of list ?? []) {
      const x = ox + (n.x ?? 0);
      const y = oy + (n.y ?? 0);
      abs.set(n.id, { x, y, width: n.width ?? 0, height: n.height ?? 0 });
      place(n.children, x, y);
    }
  };
  place(laid.children, 0, 0);
  const round = (v: number) => Math.round(v * 10) / 10;
  const byId = new Map(laid.edges.map((e) => [e.id, e]));
  const initial = pathOf(entryLeaf(root));
  return {
    machine: String(machine.id),
    initial,
    nodes: nodes.map((n) => {
      const b = abs.get(n.id)!;
      return { ...n, x: round(b.x), y: round(b.y), width: round(b.width), height: round(b.height) };
    }),
    edges: edges.map((e) => {
      const routed = byId.get(e.id);
      const o = abs.get(routed?.container ?? '__root') ?? { x: 0, y: 0 };
      const section = routed?.sections?.[0];
      const points = section ? [section.startPoint, ...(section.bendPoints ?? []), section.endPoint].map((p) => ({ x: round(o.x + p.x), y: round(o.y + p.y) })) : [];
      const l = routed?.labels?.[0];
      return { ...e, points, label: l && l.x !== undefined ? { x: round(o.x + l.x), y: round(o.y + (l.y ?? 0)), width: l.width, height: l.height } : null };
    }),
    width: Math.ceil(laid.width ?? 0),
    height: Math.ceil(laid.height ?? 0),
  };
}

/** Machines are only read here, never run: every effect of this runtime is a bug. */
function drawingRuntime(): ActorRuntime {
  const never = (): never => {
    throw new TypeError('the inspector builds machines to draw them; it never runs them');
  };
  return { runId: 'inspector', clock: systemClock, newId: (prefix) => `${prefix}-inspector`, post: never, callModel: never, runTool: never, requestApproval: never };
}

/**
 * The graphs of one definition's machines: the root under {@link ROOT_ACTOR_ID}, and every
 * child it invokes that is itself a state machine, under the child's id (its agents).
 * Children that are not machines (the blackboard store) have no graph.
 */
export async function graphsOf(definition: RunnableDefinition): Promise<Record<string, MachineGraph>> {
  if (typeof definition?.createMachine !== 'function') throw new TypeError('graphsOf(definition) needs a crew or runnable definition');
  const machine = definition.createMachine(drawingRuntime());
  const machines: Array<[string, AnyStateMachine]> = [[ROOT_ACTOR_ID, machine]];
  const actors = (machine.implementations.actors ?? {}) as Record<string, unknown>;
  const visit = (node: StateNodeLike) => {
    for (const { id, src } of node.invoke) {
      const logic = typeof src === 'string' ? actors[src] : src;
      if (isMachine(logic)) machines.push([id, logic]);
    }
    Object.values(node.states).forEach(visit);
  };
  visit(machine.root as unknown as StateNodeLike);
  return Object.fromEntries(await Promise.all(machines.map(async ([id, m]) => [id, await machineGraph(m)] as const)));
}

let defaults: Promise<{ root: MachineGraph; agent: MachineGraph }> | undefined;

/**
 * Graphs of Troupe's own crew and agent machines, for runs whose definition the inspector
 * was not given: every crew shares the root machine's states, every agent the agent's.
 */
export function defaultGraphs(): Promise<{ root: MachineGraph; agent: MachineGraph }> {
  defaults ??= graphsOf(crew({ id: 'crew', agents: [agent({ id: 'agent', role: 'any agent', instructions: '', model: 'none' })] })).then((graphs) => ({ root: graphs[ROOT_ACTOR_ID]!, agent: graphs.agent! }));
  return defaults;
}
