import { z } from 'zod';
import { tool } from '../../index.js';

/**
 * A tool holding the secret `PLANTED` that leaks it back in its result (`echoedToken`), as an
 * API echoing its token would; `notes` is returned as well, when given. The inspector tests
 * plant a secret with it and look for it where it must not be.
 */
export function lookupTool(notes?: string) {
  return tool({
    name: 'lookup',
    description: 'Looks notes up with an API token.',
    input: z.object({ query: z.string() }),
    effect: 'read',
    secrets: ['PLANTED'],
    run: ({ query }, { secrets }) => ({ query, echoedToken: secrets.PLANTED, ...(notes === undefined ? {} : { notes }) }),
  });
}
