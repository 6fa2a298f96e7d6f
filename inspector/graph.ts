import type { AnyStateMachine } from 'xstate';
import { agent } from '../actors/agent.js';
import { crew } from '../actors/crew.js';
import { systemClock } from '../core/clock.js';
import { ROOT_ACTOR_ID } from '../core/node.js';
import type { ActorRuntime, RunnableDefinition } from '../core/runtime.js';

/** One drawable state: a leaf of the machine, named by its dotted path (`running.active`). */
export interface GraphNode {
  id: string;
  kind: 'atomic' | 'final' | 'any';
  /** Ids of the actors the state invokes while in it (`model`, `tools`, `backoff`). */
  invokes: string[];
  /** Top-left corner of the node's box in the graph's coordinate space. */
  x: number;
  y: number;
}

/** One transition between two leaves; `from` is {@link ANY_STATE} for machine-level ones. */
export interface GraphEdge {
  from: string;
  to: string;
  /** Readable event: `envelope`, `model done`, `tools error`, `always`, `after 200 ms`. */
  event: string;
  guard?: string;
}

/** A state machine as plain data, laid out left to right; what the inspector page draws. */
export interface MachineGraph {
  machine: string;
  initial: string;
  nodes: GraphNode[];
  edges: GraphEdge[];
  width: number;
  height: number;
  nodeWidth: number;
  nodeHeight: number;
}

/** The pseudo-state standing for "any state" (transitions declared on the machine itself). */
export const ANY_STATE = '*';

const NODE_W = 136;
const NODE_H = 32;
const COL = 184;
const ROW = 50;
const PAD = 12;

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

function leaves(node: StateNodeLike): StateNodeLike[] {
  const children = Object.values(node.states).filter((c) => c.type !== 'history');
  return children.length === 0 ? [node] : children.flatMap(leaves);
}

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

/**
 * Reads a machine's states and transitions into a serialisable graph. Compound states are
 * flattened to their leaves: a transition declared on a compound state leaves from each of
 * its leaves, one into it lands on its initial leaf. Targetless transitions (actions only)
 * change no state and are left out.
 */
export function machineGraph(machine: AnyStateMachine): MachineGraph {
  if (!isMachine(machine)) throw new TypeError('machineGraph(machine) needs an XState state machine');
  const root = machine.root as unknown as StateNodeLike;
  const leafNodes = leaves(root);
  const edges: GraphEdge[] = [];
  const seen = new Set<string>();
  const walk = (node: StateNodeLike) => {
    const sources = node === root ? [ANY_STATE] : leaves(node).map(pathOf);
    const transitions = [...node.transitions.values()].flat().concat(node.always ?? []);
    for (const t of transitions) {
      const target = t.target?.[0];
      if (!target) continue;
      const to = pathOf(entryLeaf(target));
      const event = eventLabel(t.eventType ?? '');
      const guard = guardLabel(t.guard);
      for (const from of sources) {
        const key = `${from}\u0000${to}\u0000${event}\u0000${guard}`;
        if (seen.has(key)) continue;
        seen.add(key);
        edges.push({ from, to, event, ...(guard ? { guard } : {}) });
      }
    }
    Object.values(node.states).forEach(walk);
  };
  walk(root);
  const initial = pathOf(entryLeaf(root));
  const nodes = layout(leafNodes, edges, initial);
  const width = Math.max(...nodes.map((n) => n.x)) + NODE_W + PAD;
  const height = Math.max(...nodes.map((n) => n.y)) + NODE_H + PAD;
  return { machine: String(machine.id), initial, nodes, edges, width, height, nodeWidth: NODE_W, nodeHeight: NODE_H };
}

/**
 * Columns by distance from the initial state (breadth first), rows in document order: a
 * machine's happy path reads left to right without a layout engine in the page.
 */
function layout(leafNodes: StateNodeLike[], edges: GraphEdge[], initial: string): GraphNode[] {
  const rank = new Map<string, number>([[initial, 0]]);
  const queue = [initial];
  while (queue.length) {
    const from = queue.shift()!;
    for (const e of edges) {
      if (e.from === from && !rank.has(e.to)) {
        rank.set(e.to, rank.get(from)! + 1);
        queue.push(e.to);
      }
    }
  }
  const last = Math.max(0, ...rank.values());
  const columns: Array<Array<Omit<GraphNode, 'x' | 'y'>>> = [];
  for (const node of [...leafNodes].sort((a, b) => a.order - b.order)) {
    const id = pathOf(node);
    const column = (columns[rank.get(id) ?? last + 1] ??= []);
    column.push({ id, kind: node.type === 'final' ? 'final' : 'atomic', invokes: node.invoke.map((i) => i.id) });
  }
  if (edges.some((e) => e.from === ANY_STATE)) (columns[0] ??= []).push({ id: ANY_STATE, kind: 'any', invokes: [] });
  const tallest = Math.max(...columns.map((c) => c?.length ?? 0));
  return columns.flatMap((column, x) => {
    const offset = ((tallest - (column?.length ?? 0)) * ROW) / 2;
    return (column ?? []).map((n, y) => ({ ...n, x: PAD + x * COL, y: Math.round(PAD + offset + y * ROW) }));
  });
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
export function graphsOf(definition: RunnableDefinition): Record<string, MachineGraph> {
  if (typeof definition?.createMachine !== 'function') throw new TypeError('graphsOf(definition) needs a crew or runnable definition');
  const machine = definition.createMachine(drawingRuntime());
  const graphs: Record<string, MachineGraph> = { [ROOT_ACTOR_ID]: machineGraph(machine) };
  const actors = (machine.implementations.actors ?? {}) as Record<string, unknown>;
  const visit = (node: StateNodeLike) => {
    for (const { id, src } of node.invoke) {
      const logic = typeof src === 'string' ? actors[src] : src;
      if (isMachine(logic)) graphs[id] = machineGraph(logic);
    }
    Object.values(node.states).forEach(visit);
  };
  visit(machine.root as unknown as StateNodeLike);
  return graphs;
}

let defaults: { root: MachineGraph; agent: MachineGraph } | undefined;

/**
 * Graphs of Troupe's own crew and agent machines, for runs whose definition the inspector
 * was not given: every crew shares the root machine's states, every agent the agent's.
 */
export function defaultGraphs(): { root: MachineGraph; agent: MachineGraph } {
  if (!defaults) {
    const graphs = graphsOf(crew({ id: 'crew', agents: [agent({ id: 'agent', role: 'any agent', instructions: '', model: 'none' })] }));
    defaults = { root: graphs[ROOT_ACTOR_ID]!, agent: graphs.agent! };
  }
  return defaults;
}
