/**
 * Google's Gemini API as the fake upstream answers it (fake-upstream.ts serves
 * it beside OpenAI's and Anthropic's): generateContent, its stream (SSE with
 * `alt=sse`, else one JSON array), countTokens and embedContent. The usage is
 * chosen per request with the fake's `x-fake` header: input=N, output=N,
 * cached=N, reasoning=N (thoughts).
 */

export interface FakeGeminiUsage {
  input: number;
  output: number;
  cached: number;
  reasoning: number;
}

/** `models/{model}:{method}` under any version, as the fake routes it. */
export const GEMINI_PATH = /^\/v1(?:alpha|beta)?\/models\/([^/:]+):(generateContent|streamGenerateContent|countTokens|embedContent)$/;

const usageMetadata = (u: FakeGeminiUsage, output: number): object => ({
  promptTokenCount: u.input,
  candidatesTokenCount: output,
  totalTokenCount: u.input + output + u.reasoning,
  ...(u.cached ? { cachedContentTokenCount: u.cached } : {}),
  ...(u.reasoning ? { thoughtsTokenCount: u.reasoning } : {}),
});

/**
 * The chunks of a stream: one per delta, each with the usage so far (as
 * Gemini sends it), the last with finishReason and the whole usage.
 */
export function geminiChunks(model: string, deltas: string[], u: FakeGeminiUsage): object[] {
  return deltas.map((text, i) => {
    const last = i === deltas.length - 1;
    return {
      candidates: [{ content: { role: 'model', parts: [{ text }] }, index: 0, ...(last ? { finishReason: 'STOP' } : {}) }],
      usageMetadata: usageMetadata(u, last ? u.output : i + 1),
      modelVersion: model,
      responseId: 'fake-gemini-response',
    };
  });
}

/** The whole answer to generateContent. */
export function geminiResponse(model: string, deltas: string[], u: FakeGeminiUsage): object {
  return {
    candidates: [{ content: { role: 'model', parts: [{ text: deltas.join('') }] }, finishReason: 'STOP', index: 0 }],
    usageMetadata: usageMetadata(u, u.output),
    modelVersion: model,
    responseId: 'fake-gemini-response',
  };
}

/** Google's error body, as its 4xx and 5xx carry it. */
export function geminiError(status: number): object {
  const name = status === 400 ? 'INVALID_ARGUMENT' : status === 403 ? 'PERMISSION_DENIED' : status === 429 ? 'RESOURCE_EXHAUSTED' : status >= 500 ? 'UNAVAILABLE' : 'INVALID_ARGUMENT';
  return { error: { code: status, message: status === 400 ? 'API key not valid. Please pass a valid API key.' : `Fake upstream error ${status}`, status: name } };
}
