// The official `openai` npm package against Strata's front door: what an OpenAI user's code does,
// streaming and not, and the errors it must be able to catch. Usage:
//   node client_test.mjs http://127.0.0.1:8000/v1 MODEL
// Exits 0 after printing "openai-node: all checks passed"; any failed check exits 1 naming it.
// The package is installed into deploy/node by deploy/install-deps.sh.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../../../deploy/node/package.json'));
const OpenAI = require('openai');

const [baseURL, model] = process.argv.slice(2);
if (!baseURL || !model) {
  console.error('usage: node client_test.mjs BASE_URL MODEL');
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey: process.env.STRATA_API_KEY ?? 'unused', maxRetries: 0, timeout: 30000 });

async function check(name, body) {
  try {
    await body();
    console.log(`ok   ${name}`);
  } catch (error) {
    console.error(`FAIL ${name}: ${error?.stack ?? error}`);
    process.exit(1);
  }
}

async function expectError(promise, status, code) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof OpenAI.APIError, `not an APIError: ${error}`);
    assert.equal(error.status, status);
    if (code) assert.equal(error.code, code);
    return error;
  }
  assert.fail(`expected HTTP ${status}`);
}

const prompt = [5, 6, 7, 8, 9, 10, 11, 12];

await check('models.list names the served model', async () => {
  const models = await client.models.list();
  assert.ok(models.data.some((m) => m.id === model), JSON.stringify(models.data));
});

let whole;
await check('completions.create (token ids, not streamed) with usage', async () => {
  whole = await client.completions.create({ model, prompt, max_tokens: 6, temperature: 0, ignore_eos: true });
  assert.equal(whole.object, 'text_completion');
  assert.equal(typeof whole.choices[0].text, 'string');
  assert.equal(whole.choices[0].finish_reason, 'length');
  assert.equal(whole.usage.prompt_tokens, prompt.length);
  assert.equal(whole.usage.completion_tokens, 6);
  assert.equal(whole.usage.total_tokens, prompt.length + 6);
  assert.equal(typeof whole.usage.strata.worker_id, 'string');
  assert.ok(whole.usage.strata.ttft_s > 0);
});

await check('completions.create streamed gives the same text, then usage', async () => {
  const stream = await client.completions.create({
    model, prompt, max_tokens: 6, temperature: 0, ignore_eos: true, stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.choices.length > 0) {
      text += chunk.choices[0].text;
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, whole.choices[0].text);
  assert.equal(finish, 'length');
  assert.equal(usage?.completion_tokens, 6);
});

await check('chat.completions.create, streamed and not', async () => {
  const messages = [{ role: 'user', content: 'Hello there' }];
  const reply = await client.chat.completions.create({ model, messages, max_tokens: 5, temperature: 0, ignore_eos: true });
  assert.equal(reply.object, 'chat.completion');
  assert.equal(reply.choices[0].message.role, 'assistant');
  assert.equal(reply.usage.completion_tokens, 5);
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 5, temperature: 0, ignore_eos: true, stream: true,
  });
  let text = '';
  let role = null;
  for await (const chunk of stream) {
    role = role ?? chunk.choices[0]?.delta?.role ?? null;
    text += chunk.choices[0]?.delta?.content ?? '';
  }
  assert.equal(role, 'assistant');
  assert.equal(text, reply.choices[0].message.content);
});

await check('completions.create with logprobs and echo: the legacy logprobs object', async () => {
  const reply = await client.completions.create({
    model, prompt, max_tokens: 3, temperature: 0, ignore_eos: true, logprobs: 2, echo: true,
  });
  const { logprobs } = reply.choices[0];
  assert.equal(logprobs.tokens.length, prompt.length + 3);
  assert.equal(logprobs.token_logprobs[0], null);  // the prompt's first token has no context
  assert.equal(logprobs.top_logprobs[0], null);
  for (let i = 1; i < logprobs.tokens.length; i++) {
    assert.ok(logprobs.token_logprobs[i] <= 0, `token_logprobs[${i}] = ${logprobs.token_logprobs[i]}`);
    const top = Object.values(logprobs.top_logprobs[i]);
    assert.ok(top.length >= 1 && top.length <= 3, JSON.stringify(logprobs.top_logprobs[i]));
    assert.ok(logprobs.text_offset[i] >= logprobs.text_offset[i - 1], `text_offset[${i}]`);
  }
  // Greedy: each generated token is the most likely one.
  for (let i = prompt.length; i < logprobs.tokens.length; i++) {
    assert.equal(logprobs.token_logprobs[i], Math.max(...Object.values(logprobs.top_logprobs[i])));
  }
  // The text starts with the prompt's (its tokens are whole ASCII characters here).
  const promptText = logprobs.tokens.slice(0, prompt.length).join('');
  assert.ok(reply.choices[0].text.startsWith(promptText), JSON.stringify([reply.choices[0].text, promptText]));
});

await check('chat.completions.create with logprobs and top_logprobs, streamed and not', async () => {
  const messages = [{ role: 'user', content: 'Hello there' }];
  const request = { model, messages, max_tokens: 4, temperature: 0, ignore_eos: true, logprobs: true, top_logprobs: 3 };
  const reply = await client.chat.completions.create(request);
  const content = reply.choices[0].logprobs.content;
  assert.equal(content.length, 4);
  for (const token of content) {
    assert.equal(typeof token.token, 'string');
    assert.ok(token.logprob <= 0);
    assert.ok(Array.isArray(token.bytes));
    assert.equal(token.top_logprobs.length, 3);
    assert.equal(token.top_logprobs[0].logprob, token.logprob);  // greedy
  }
  const stream = await client.chat.completions.create({ ...request, stream: true });
  const streamed = [];
  for await (const chunk of stream) streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []));
  assert.deepEqual(streamed, content);
});

await check('n = 3 choices, streamed and not, indexed', async () => {
  const request = { model, prompt, max_tokens: 4, temperature: 1, seed: 11, ignore_eos: true, n: 3 };
  const reply = await client.completions.create(request);
  assert.deepEqual(reply.choices.map((c) => c.index), [0, 1, 2]);
  assert.equal(reply.usage.completion_tokens, 12);
  const stream = await client.completions.create({ ...request, stream: true });
  const texts = ['', '', ''];
  for await (const chunk of stream) for (const c of chunk.choices) texts[c.index] += c.text;
  assert.deepEqual(texts, reply.choices.map((c) => c.text));
});

await check('response_format json_object: BadRequestError naming the field', async () => {
  const error = await expectError(client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'x' }], max_tokens: 2, response_format: { type: 'json_object' },
  }), 400);
  assert.equal(error.param, 'response_format');
});

await check('unknown model: NotFoundError model_not_found', async () => {
  const error = await expectError(client.completions.create({ model: 'no-such-model', prompt, max_tokens: 2 }), 404,
    'model_not_found');
  assert.ok(error instanceof OpenAI.NotFoundError);
});

await check('over-long prompt: BadRequestError context_length_exceeded', async () => {
  const error = await expectError(
    client.completions.create({ model, prompt: new Array(9000).fill(7), max_tokens: 2 }), 400, 'context_length_exceeded');
  assert.ok(error instanceof OpenAI.BadRequestError);
  assert.match(error.message, /maximum context length/);
});

await check('malformed JSON: 400 invalid_request_error', async () => {
  const response = await fetch(`${baseURL}/chat/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"model": ',
  });
  assert.equal(response.status, 400);
  const body = await response.json();
  assert.equal(body.error.type, 'invalid_request_error');
});

console.log('openai-node: all checks passed');
