/** How states read in journals, history and inspectors. */

type PersistedActor = { value?: unknown; children?: Record<string, { snapshot?: PersistedActor }> };

/** An XState state value as a dotted path: `running.backingOff` (parallel regions joined by `,`). */
export function stateString(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object') {
    return Object.entries(value as Record<string, unknown>)
      .map(([key, child]) => (child && (typeof child === 'string' || Object.keys(child as object).length) ? `${key}.${stateString(child)}` : key))
      .join(',');
  }
  return String(value);
}

/** Reads actor states out of a persisted root snapshot. */
export function statesOf(snapshot: unknown, rootId: string): Record<string, string> {
  const root = snapshot as PersistedActor;
  const states: Record<string, string> = {};
  if (root?.value !== undefined) states[rootId] = stateString(root.value);
  for (const [id, child] of Object.entries(root?.children ?? {})) {
    if (child?.snapshot?.value !== undefined) states[id] = stateString(child.snapshot.value);
  }
  return states;
}

