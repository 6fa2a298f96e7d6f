import type { Envelope } from '../../core/envelope.js';
import type { DeliveryReceipt, Transport, TransportBindings, TransportFactory, TransportStatus } from '../../core/transport.js';

/** The receipt of an envelope handed over in process: no transport cursor to write. */
export const noCursor = (seq = 0): DeliveryReceipt => ({ seq, takeCursorOps: () => [] });

/**
 * The whole {@link Transport} contract around a test's `send`: delivered at once, so
 * `flushed` has nothing to wait for and there are no peers to report.
 */
export function inProcessTransport(nodeId: string, send: Transport['send'] = async () => {}, onClose: () => void = () => {}): Transport {
  let status: TransportStatus = 'open';
  const close = async () => {
    if (status === 'closed') return;
    status = 'closed';
    onClose();
  };
  return {
    nodeId,
    get status() {
      return status;
    },
    send,
    flushed: async () => {},
    peers: () => [],
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * An in-process network for tests: nodes connect with `network.transport`; envelopes to a
 * node that is down wait until it connects again, like a transport's durable outbox.
 */
export function memoryNetwork() {
  const nodes = new Map<string, TransportBindings>();
  const queues = new Map<string, Array<{ from: string; envelope: Envelope }>>();
  const busy = new Set<string>();
  const delivered: Array<{ from: string; to: string; type: string }> = [];

  const pump = async (to: string) => {
    if (busy.has(to)) return;
    busy.add(to);
    try {
      const queue = queues.get(to) ?? [];
      while (queue.length > 0 && nodes.has(to)) {
        const { from, envelope } = queue[0]!;
        try {
          await nodes.get(to)!.deliver(structuredClone(envelope), from, noCursor());
          delivered.push({ from, to, type: envelope.type });
        } catch {
          // Refused by the receiver (unknown actor): dropped, as a real transport would.
        }
        queue.shift();
      }
    } finally {
      busy.delete(to);
    }
  };

  const transport: TransportFactory = async (bindings) => {
    nodes.set(bindings.nodeId, bindings);
    queueMicrotask(() => void pump(bindings.nodeId));
    const t = inProcessTransport(
      bindings.nodeId,
      async (toNode, envelope) => {
        const queue = queues.get(toNode) ?? [];
        queues.set(toNode, queue);
        queue.push({ from: bindings.nodeId, envelope });
        queueMicrotask(() => void pump(toNode));
      },
      () => {
        if (nodes.get(bindings.nodeId) === bindings) nodes.delete(bindings.nodeId);
      },
    );
    return t;
  };
  return { transport, delivered };
}
