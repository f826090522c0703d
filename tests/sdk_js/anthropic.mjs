// The official `@anthropic-ai/sdk` Node SDK, unchanged, against a tiergate gateway: each check
// prints what the SDK gave back (tests/sdk_js/test_anthropic_node.py asserts on it).
import Anthropic from '@anthropic-ai/sdk';

import { API_KEY, BASE_URL, described, main, receipt } from './run.mjs';

// The SDK adds /v1/messages itself: the base URL is the gateway's root.
const client = (options = {}) =>
  new Anthropic({ baseURL: BASE_URL, apiKey: API_KEY, maxRetries: 0, ...options });

const HELLO = [{ role: 'user', content: 'Say hello.' }];
const QUESTION = [{ role: 'user', content: 'What is the weather in Paris?' }];
const WEATHER = {
  name: 'get_weather',
  description: 'The current weather in a city.',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

async function caught(promise) {
  try {
    await promise;
  } catch (error) {
    return described(error);
  }
  return { class: null };
}

const checks = {
  async message() {
    const { data, response, request_id: requestId } = await client()
      .messages.create({ model: 'auto', max_tokens: 12, messages: HELLO })
      .withResponse();
    return {
      id: data.id,
      type: data.type,
      role: data.role,
      content: data.content,
      stopReason: data.stop_reason,
      usage: data.usage,
      requestId,
      sdkRequestId: data._request_id,
      headers: receipt(response.headers),
    };
  },

  async stream() {
    const stream = client().messages.stream({ model: 'auto', max_tokens: 12, messages: HELLO });
    let text = '';
    const kinds = [];
    stream.on('text', (delta) => {
      text += delta;
    });
    stream.on('streamEvent', (event) => kinds.push(event.type));
    const final = await stream.finalMessage();
    const { response, request_id: requestId } = await stream.withResponse();
    return {
      text,
      requestId,
      kinds,
      final: { content: final.content, stopReason: final.stop_reason, usage: final.usage },
      finalText: await stream.finalText(),
      headers: receipt(response.headers),
    };
  },

  async tools() {
    const stream = client().messages.stream({
      model: 'agent',
      max_tokens: 64,
      messages: QUESTION,
      tools: [WEATHER],
    });
    const final = await stream.finalMessage();
    const calls = final.content.filter((block) => block.type === 'tool_use');
    const answer = await client().messages.create({
      model: 'agent',
      max_tokens: 64,
      tools: [WEATHER],
      messages: [
        ...QUESTION,
        { role: 'assistant', content: final.content },
        {
          role: 'user',
          content: calls.map((c) => ({
            type: 'tool_result',
            tool_use_id: c.id,
            content: '18 degrees and sunny',
          })),
        },
      ],
    });
    return {
      stopReason: final.stop_reason,
      calls: calls.map((c) => ({ name: c.name, input: c.input })),
      answer: answer.content,
      answerStopReason: answer.stop_reason,
    };
  },

  async countTokens() {
    const sdk = client();
    const { data: short, request_id: requestId } = await sdk.messages
      .countTokens({ model: 'auto', messages: QUESTION })
      .withResponse();
    const longer = await sdk.messages.countTokens({
      model: 'auto',
      messages: QUESTION,
      system: 'Answer in French.',
      tools: [WEATHER],
    });
    return { short: short.input_tokens, longer: longer.input_tokens, requestId };
  },

  async models() {
    const sdk = client();
    const models = [];
    for await (const model of sdk.models.list()) models.push(model);
    const one = await sdk.models.retrieve('auto');
    const missing = await caught(sdk.models.retrieve('claude-9'));
    const pick = ({ id, type, display_name: name, created_at: created }) => ({ id, type, name, created });
    return { models: models.map(pick), one: pick(one), missing };
  },

  async badParams() {
    const sdk = client();
    return {
      temperature: await caught(
        sdk.messages.create({ model: 'auto', max_tokens: 8, messages: HELLO, temperature: 7 }),
      ),
      model: await caught(sdk.messages.create({ model: 'gpt-17-ultra', max_tokens: 8, messages: HELLO })),
      maxTokens: await caught(sdk.messages.create({ model: 'auto', messages: HELLO })),
      streamed: await caught(
        sdk.messages.stream({ model: 'auto', max_tokens: 8, messages: HELLO, top_k: -3 }).finalMessage(),
      ),
    };
  },

  async auth() {
    const stranger = new Anthropic({ baseURL: BASE_URL, apiKey: 'not-a-key-0000', maxRetries: 0 });
    return {
      create: await caught(stranger.messages.create({ model: 'auto', max_tokens: 8, messages: HELLO })),
      count: await caught(stranger.messages.countTokens({ model: 'auto', messages: HELLO })),
    };
  },

  async abort() {
    const stream = client().messages.stream({ model: 'slow', max_tokens: 400, messages: HELLO });
    let deltas = 0;
    let text = '';
    stream.on('text', (delta) => {
      deltas += 1;
      text += delta;
      if (deltas === 3) stream.abort();
    });
    const error = await caught(stream.finalMessage());
    const { response } = await stream.withResponse();
    return { deltas, text, error, headers: receipt(response.headers) };
  },

  async retry429() {
    const started = performance.now();
    const { data, response } = await client({ maxRetries: 2 })
      .messages.create({ model: 'limited', max_tokens: 16, messages: HELLO })
      .withResponse();
    return {
      content: data.content,
      waitedMs: performance.now() - started,
      headers: receipt(response.headers),
      noRetry: await caught(
        client({ maxRetries: 0 }).messages.create({ model: 'limited', max_tokens: 16, messages: HELLO }),
      ),
    };
  },
  async retry503() {
    // The upstream's 503 opens the backend's breaker; the SDK's retry (its own back-off: the
    // 503 said nothing about when) finds it open and is told when it lets a probe through
    // (Retry-After); the retry after that wait is answered.
    const started = performance.now();
    const { data } = await client({ maxRetries: 2 })
      .messages.create({ model: 'failing', max_tokens: 16, messages: HELLO })
      .withResponse();
    const waitedMs = performance.now() - started;
    const once = client({ maxRetries: 0 });
    return {
      content: data.content,
      waitedMs,
      upstream: await caught(once.messages.create({ model: 'failing', max_tokens: 16, messages: HELLO })),
      skipped: await caught(once.messages.create({ model: 'failing', max_tokens: 16, messages: HELLO })),
    };
  },
};

await main(checks);
