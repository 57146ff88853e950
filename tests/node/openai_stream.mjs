// A streaming chat completion made with the official OpenAI Node SDK, as an agent would make it
// through agentgw (SPEC §3.2: base URL http://127.0.0.1:PORT/api/openai/v1, api key = agent key).
//
//   node openai_stream.mjs [BASE_URL [API_KEY]]
//
// BASE_URL and API_KEY default to $AGENTGW_BASE_URL and $AGENTGW_API_KEY (prefer the
// environment for the key: argv is visible to other local users). Prints one JSON line,
// {"text": <the deltas concatenated>, "chunks": <chunks received>, "finish_reason": ...,
// "model": ...}, and exits 0; on any error prints one line to stderr and exits 1.
import OpenAI from 'openai';

const baseURL = process.argv[2] || process.env.AGENTGW_BASE_URL;
const apiKey = process.argv[3] || process.env.AGENTGW_API_KEY;
if (!baseURL || !apiKey) {
  console.error('usage: node openai_stream.mjs BASE_URL API_KEY (or AGENTGW_BASE_URL, AGENTGW_API_KEY)');
  process.exit(2);
}

try {
  // No retries: a test wants the first failure, not a slower second one.
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 20_000 });
  const stream = await client.chat.completions.create({
    model: 'test-model',
    messages: [
      { role: 'system', content: 'You are a test.' },
      { role: 'user', content: 'Say hello.' },
    ],
    stream: true,
  });
  let text = '';
  let chunks = 0;
  let finishReason = null;
  let model = null;
  for await (const chunk of stream) {
    chunks += 1;
    model = chunk.model ?? model;
    for (const choice of chunk.choices ?? []) {
      text += choice.delta?.content ?? '';
      finishReason = choice.finish_reason ?? finishReason;
    }
  }
  console.log(JSON.stringify({ text, chunks, finish_reason: finishReason, model }));
} catch (err) {
  const status = err?.status ? ` (HTTP ${err.status})` : '';
  console.error(`openai_stream: ${err?.constructor?.name ?? 'Error'}${status}: ${err?.message ?? err}`);
  process.exit(1);
}
