/**
 * The conformance suite every `ModelProvider` must pass: what the runtime relies on whatever
 * engine answers. Runner independent: see {@link TestRegistrar}.
 * @module
 */
import assert from 'node:assert/strict';
import { MessageSchema } from '../core/messages.js';
import type { ModelCallContext, ModelProvider, ModelRequest, ModelResponse } from '../core/model.js';
import type { TestRegistrar } from './suite.js';

/** One provider under test, set up so that it answers the next call with text. */
export interface ModelProviderFixture {
  provider: ModelProvider;
  /**
   * The request to send (its `agent`, `model` and messages are what the fixture prepared an
   * answer for). The suite fills in nothing: a request is sent as given.
   */
  request: ModelRequest;
  /** Whether the provider streams: its text must then also reach `onToken`, piece by piece. */
  streams: boolean;
  /** Releases what the fixture opened (a server, a script). */
  close?(): Promise<void>;
}

/** How long a provider may take to give up after its signal aborted. */
const ABORT_WITHIN_MS = 2_000;

/**
 * Registers the cases of the model-provider contract with `test` (vitest's, jest's or
 * node:test's `describe`, `it` and `afterEach`). `setup` is called once per case and must
 * prepare the provider to answer one call with a non-empty text.
 *
 * The contract: `generate` resolves with a well-formed assistant message (what
 * `MessageSchema` accepts, with role `assistant`) and the usage of the call (token counts, non-negative
 * integers, not both zero); an aborted signal makes it reject with the signal's reason and
 * leaves nothing running; a streaming provider hands the answer's text to `onToken` as it
 * arrives, and the pieces add up to the final text.
 */
export function modelProviderConformance(name: string, setup: () => Promise<ModelProviderFixture>, test: TestRegistrar): void {
  const { describe, it, afterEach } = test;
  describe(`${name} model provider conformance`, () => {
    let fixture: ModelProviderFixture | undefined;
    const start = async () => (fixture = await setup());
    afterEach(async () => {
      await fixture?.close?.();
      fixture = undefined;
    });
    const call = (f: ModelProviderFixture, context: Partial<ModelCallContext> = {}): Promise<ModelResponse> =>
      f.provider.generate(f.request, { signal: new AbortController().signal, ...context });

    it('answers with a well-formed assistant message', async () => {
      const f = await start();
      const response = await call(f);
      const parsed = MessageSchema.safeParse(response.message);
      assert.ok(parsed.success && parsed.data.role === 'assistant', `not an assistant message: ${JSON.stringify(response.message)}`);
      assert.ok(response.message.content.length > 0, 'the prepared answer has text, the message has none');
      for (const call of response.message.toolCalls ?? []) assert.ok(call.id && call.name, `a tool call without id or name: ${JSON.stringify(call)}`);
    });

    it('reports the usage of the call', async () => {
      const f = await start();
      const { usage } = await call(f);
      for (const [key, value] of Object.entries({ inputTokens: usage.inputTokens, outputTokens: usage.outputTokens })) {
        assert.ok(Number.isInteger(value) && value >= 0, `usage.${key} is ${value}, not a non-negative integer`);
      }
      assert.ok(usage.inputTokens + usage.outputTokens > 0, 'a call that sent and received text reports no tokens at all');
    });

    it('rejects with the reason of an aborted signal', async () => {
      const f = await start();
      const controller = new AbortController();
      const reason = new Error('stopped by the conformance suite');
      controller.abort(reason);
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        f.provider.generate(f.request, { signal: controller.signal }).then(
          () => 'resolved',
          (error: unknown) => error,
        ),
        new Promise((resolve) => (timer = setTimeout(resolve, ABORT_WITHIN_MS, 'still running'))),
      ]);
      clearTimeout(timer);
      assert.equal(outcome, reason);
    });

    it('streams the text through onToken when it streams', async () => {
      const f = await start();
      const pieces: string[] = [];
      const response = await call(f, { onToken: (text) => pieces.push(text) });
      if (!f.streams) return;
      assert.ok(pieces.length > 0, 'a streaming provider called onToken never');
      assert.equal(pieces.join(''), response.message.content);
    });
  });
}
