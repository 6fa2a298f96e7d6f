import { once } from 'node:events';
import WebSocket from 'ws';

/** One message of the inspector's WebSocket protocol, as a page receives it. */
export type InspectorMessage = { type: string; [key: string]: unknown };

/**
 * A page's connection to an inspector at `url` (its http address): what it sends, and a wait
 * for the first message (seen already or to come) that passes a test. `defer` closes it after
 * the test.
 */
export async function inspectorClient(url: string, defer: (cleanup: () => Promise<unknown>) => void) {
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}ws`);
  defer(async () => ws.close());
  const inbox: InspectorMessage[] = [];
  const waiters: Array<{ test(m: InspectorMessage): boolean; resolve(m: InspectorMessage): void }> = [];
  ws.on('message', (data) => {
    const message = JSON.parse(String(data)) as InspectorMessage;
    inbox.push(message);
    for (const w of [...waiters]) if (w.test(message)) waiters.splice(waiters.indexOf(w), 1) && w.resolve(message);
  });
  await once(ws, 'open');
  return {
    send: (message: unknown) => ws.send(JSON.stringify(message)),
    waitFor: (test: (m: InspectorMessage) => boolean) => {
      const seen = inbox.find(test);
      return seen ? Promise.resolve(seen) : new Promise<InspectorMessage>((resolve) => waiters.push({ test, resolve }));
    },
  };
}
