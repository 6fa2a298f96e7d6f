/**
 * The words the CLI shows for a machine state. Actor states are implementation names
 * (`running.active`, `awaitingApproval`); a person reading progress needs what the actor is
 * doing.
 */
const WORDS: Readonly<Record<string, string>> = {
  idle: 'idle',
  planning: 'planning',
  acting: 'calling tools',
  observing: 'reading results',
  delegating: 'waiting for a worker',
  awaitingApproval: 'waiting for approval',
  recovering: 'retrying',
  done: 'done',
  failed: 'failed',
  // The crew's root.
  running: 'running',
  'running.active': 'running',
  'running.backingOff': 'restarting an agent',
  hosting: 'hosting',
  ended: 'done',
};

/**
 * What `state` (a dotted state path) means in words. A state this table does not know
 * (a custom machine's) reads as its innermost name split into words, never as the path.
 */
export function stateWords(state: string): string {
  const known = WORDS[state];
  if (known !== undefined) return known;
  const innermost = state.split(',')[0]!.split('.').pop() ?? state;
  return WORDS[innermost] ?? innermost.replace(/([a-z0-9])([A-Z])/g, '$1 $2').toLowerCase();
}

/** States in which the actor is busy (a call runs or it waits on something), so time spent counts. */
export function isBusy(state: string): boolean {
  return !['', 'idle', 'done', 'failed', 'ended'].includes(state);
}
