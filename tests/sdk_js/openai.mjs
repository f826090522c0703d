// The official `openai` Node SDK, unchanged, against a tiergate gateway: each check prints what
// the SDK gave back (tests/sdk_js/test_openai_node.py asserts on it).
import OpenAI from 'openai';

import { API_KEY, BASE_URL, described, main, receipt } from './run.mjs';

const client = (options = {}) =>
  new OpenAI({ baseURL: `${BASE_URL}/v1`, apiKey: API_KEY, maxRetries: 0, ...options });

const EASY = [{ role: 'user', content: 'Say hello to my friend Anna.' }];
const QUESTION = [{ role: 'user', content: 'What is the weather in Paris?' }];
const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The current weather in a city.',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' } },
      required: ['city'],
    },
  },
};

/** A response's output text, joined from its message items. */
const textOf = (response) =>
  response.output
    .flatMap((item) => (item.type === 'message' ? item.content : []))
    .filter((part) => part.type === 'output_text')
    .map((part) => part.text)
    .join('');

async function caught(promise) {
  try {
    await promise;
  } catch (error) {
    return described(error);
  }
  return { class: null };
}

const checks = {
  async chat() {
    const { data, response } = await client()
      .chat.completions.create({ model: 'auto', messages: EASY, max_tokens: 24, temperature: 0 })
      .withResponse();
    const choice = data.choices[0];
    return {
      id: data.id,
      object: data.object,
      model: data.model,
      role: choice.message.role,
      content: choice.message.content,
      finish: choice.finish_reason,
      usage: data.usage,
      requestId: data._request_id,
      headers: receipt(response.headers),
    };
  },

  async stream() {
    const sdk = client();
    const messages = [{ role: 'user', content: 'Name a colour of the sky.' }];
    const whole = await sdk.chat.completions.create({
      model: 'tiny',
      messages,
      max_tokens: 20,
      temperature: 0,
    });
    const { data: stream, response } = await sdk.chat.completions
      .create({
        model: 'tiny',
        messages,
        max_tokens: 20,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      })
      .withResponse();
    let text = '';
    let finish = null;
    let usage = null;
    let usageChunkChoices = null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      if (chunk.usage) {
        usage = chunk.usage;
        usageChunkChoices = chunk.choices.length;
        continue;
      }
      text += chunk.choices[0]?.delta?.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    return {
      text,
      finish,
      usage,
      usageChunkChoices,
      chunks,
      contentType: response.headers.get('content-type'),
      headers: receipt(response.headers),
      whole: {
        text: whole.choices[0].message.content,
        finish: whole.choices[0].finish_reason,
        usage: whole.usage,
      },
    };
  },

  async tools() {
    const sdk = client();
    const first = await sdk.chat.completions.create({
      model: 'agent',
      messages: QUESTION,
      tools: [WEATHER],
      tool_choice: 'auto',
    });
    const message = first.choices[0].message;
    const calls = message.tool_calls ?? [];
    const second = await sdk.chat.completions.create({
      model: 'agent',
      tools: [WEATHER],
      messages: [
        ...QUESTION,
        message,
        ...calls.map((call) => ({
          role: 'tool',
          tool_call_id: call.id,
          content: '18 degrees and sunny',
        })),
      ],
    });
    // The SDK's streaming helper joins the streamed argument pieces into each call.
    const runner = sdk.chat.completions.stream({
      model: 'agent',
      messages: QUESTION,
      tools: [WEATHER],
    });
    const streamed = await runner.finalChatCompletion();
    return {
      finish: first.choices[0].finish_reason,
      calls: calls.map((c) => ({ id: c.id, type: c.type, name: c.function.name, arguments: JSON.parse(c.function.arguments) })),
      answer: second.choices[0].message.content,
      streamedFinish: streamed.choices[0].finish_reason,
      streamedCalls: (streamed.choices[0].message.tool_calls ?? []).map((c) => ({
        name: c.function.name,
        arguments: JSON.parse(c.function.arguments),
      })),
    };
  },

  async json() {
    const completion = await client().chat.completions.create({
      model: 'agent',
      messages: [{ role: 'user', content: 'Answer as JSON: is the sky blue?' }],
      response_format: { type: 'json_object' },
    });
    return { parsed: JSON.parse(completion.choices[0].message.content) };
  },

  async embeddings() {
    // The SDK asks for base64 unless told otherwise, and decodes it to floats itself.
    const sdk = client();
    const input = ['first text', 'second text'];
    const packed = await sdk.embeddings.create({ model: 'agent', input });
    const floats = await sdk.embeddings.create({ model: 'agent', input, encoding_format: 'float' });
    return {
      packed: packed.data.map((item) => Array.from(item.embedding)),
      floats: floats.data.map((item) => item.embedding),
    };
  },

  async parse() {
    // Structured output: the SDK's parse() checks the schema's strictness and parses the text.
    const completion = await client().chat.completions.parse({
      model: 'agent',
      messages: [{ role: 'user', content: 'Is the sky blue? Answer as JSON.' }],
      response_format: {
        type: 'json_schema',
        json_schema: {
          name: 'answer',
          strict: true,
          schema: {
            type: 'object',
            properties: { answer: { type: 'string' }, confidence: { type: 'number' } },
            required: ['answer', 'confidence'],
            additionalProperties: false,
          },
        },
      },
    });
    return { parsed: completion.choices[0].message.parsed };
  },

  async models() {
    const sdk = client();
    const ids = [];
    for await (const model of sdk.models.list()) ids.push(model.id);
    const one = await sdk.models.retrieve('auto');
    const missing = await caught(sdk.models.retrieve('gpt-9'));
    return { ids, one: { id: one.id, object: one.object }, missing };
  },

  async responses() {
    const sdk = client();
    const { data, response } = await sdk.responses
      .create({ model: 'auto', input: 'Say hello.', max_output_tokens: 12 })
      .withResponse();
    const kinds = [];
    let deltas = '';
    let final = null;
    const stream = await sdk.responses.create({
      model: 'auto',
      input: 'Say hello.',
      max_output_tokens: 12,
      stream: true,
    });
    for await (const event of stream) {
      kinds.push(event.type);
      if (event.type === 'response.output_text.delta') deltas += event.delta;
      if (event.type === 'response.completed' || event.type === 'response.incomplete') {
        final = event.response;
      }
    }
    // The helper that accumulates the events into the final response (its snapshot is final
    // on response.completed, so the answer must be whole: the stub's).
    const helper = sdk.responses.stream({ model: 'agent', input: 'Say hello.' });
    let helperText = '';
    helper.on('response.output_text.delta', (event) => {
      helperText += event.delta;
    });
    const finalResponse = await helper.finalResponse();
    return {
      plain: {
        id: data.id,
        object: data.object,
        status: data.status,
        outputText: data.output_text,
        usage: data.usage,
        headers: receipt(response.headers),
      },
      streamed: {
        kinds,
        deltas,
        // output_text is the SDK's convenience on create()'s result: the event's has items.
        finalText: final ? textOf(final) : null,
        usage: final?.usage ?? null,
      },
      helper: {
        text: helperText,
        // output_text is a convenience of create()'s result, not of the helper's final
        // response (the SDK adds it only when it parses the text format): joined here.
        finalText: textOf(finalResponse),
        status: finalResponse.status,
      },
    };
  },

  async badParams() {
    const sdk = client();
    return {
      temperature: await caught(
        sdk.chat.completions.create({ model: 'auto', messages: EASY, temperature: 7 }),
      ),
      model: await caught(sdk.chat.completions.create({ model: 'gpt-9', messages: EASY })),
      messages: await caught(sdk.chat.completions.create({ model: 'auto', messages: [] })),
      role: await caught(
        sdk.chat.completions.create({ model: 'auto', messages: [{ role: 'robot', content: 'hi' }] }),
      ),
      responsesStore: await caught(
        sdk.responses.create({ model: 'auto', input: 'hi', previous_response_id: 'resp_1' }),
      ),
      responsesTokens: await caught(
        sdk.responses.create({ model: 'auto', input: 'hi', max_output_tokens: -1 }),
      ),
    };
  },

  async auth() {
    const stranger = new OpenAI({ baseURL: `${BASE_URL}/v1`, apiKey: 'not-a-key-0000', maxRetries: 0 });
    return {
      chat: await caught(stranger.chat.completions.create({ model: 'auto', messages: EASY })),
      models: await caught(stranger.models.list()),
    };
  },

  async abort() {
    // A slow stream (the `slow` backend paces its words), abandoned after a few chunks.
    const controller = new AbortController();
    const { data: stream, response } = await client()
      .chat.completions.create(
        { model: 'slow', messages: EASY, stream: true },
        { signal: controller.signal },
      )
      .withResponse();
    let chunks = 0;
    let text = '';
    // The SDK's stream ends quietly when its signal aborts (no error thrown).
    for await (const chunk of stream) {
      chunks += 1;
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunks === 3) controller.abort();
    }
    // Aborting a whole (not streamed) request before its answer.
    const early = new AbortController();
    const pending = client().chat.completions.create(
      { model: 'held', messages: EASY },
      { signal: early.signal },
    );
    setTimeout(() => early.abort(), 300);
    const wholeError = await caught(pending);
    return { chunks, text, aborted: controller.signal.aborted, headers: receipt(response.headers), whole: wholeError };
  },

  async retry429() {
    const started = performance.now();
    const { data, response } = await client({ maxRetries: 2 })
      .chat.completions.create({ model: 'limited', messages: EASY })
      .withResponse();
    return {
      content: data.choices[0].message.content,
      waitedMs: performance.now() - started,
      headers: receipt(response.headers),
      noRetry: await caught(
        client({ maxRetries: 0 }).chat.completions.create({ model: 'limited', messages: EASY }),
      ),
    };
  },

  async retry503() {
    // The upstream's 503 opens the backend's breaker; the SDK's retry (its own back-off: the
    // 503 said nothing about when) finds it open and is told when it lets a probe through
    // (Retry-After); the retry after that wait is answered.
    const started = performance.now();
    const { data } = await client({ maxRetries: 2 })
      .chat.completions.create({ model: 'failing', messages: EASY })
      .withResponse();
    const waitedMs = performance.now() - started;
    const once = client({ maxRetries: 0 });
    return {
      content: data.choices[0].message.content,
      waitedMs,
      upstream: await caught(once.chat.completions.create({ model: 'failing', messages: EASY })),
      skipped: await caught(once.chat.completions.create({ model: 'failing', messages: EASY })),
    };
  },
};

await main(checks);
