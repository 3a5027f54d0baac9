import { decodeBody } from './content-encoding.js';

/**
 * Removes the key from text the upstream wrote, whole or in the masked form
 * OpenAI echoes in 401 bodies (`sk-proj-****…abcd`), so not even the fragments a
 * mask leaves reach the agent.
 */
export const REDACTED = '[redacted]';

// A run of stars, with the key-ish characters on either side of it.
const MASKED = /[A-Za-z0-9_-]*\*{2,}[A-Za-z0-9_-]*/g;

export function redactKey(text: string, key: string): string {
  return text
    .split(key)
    .join(REDACTED)
    .replace(MASKED, (token) => {
      const head = token.slice(0, token.indexOf('*'));
      const tail = token.slice(token.lastIndexOf('*') + 1);
      return (head || tail) && key.startsWith(head) && key.endsWith(tail) ? REDACTED : token;
    });
}

export interface CleanBody {
  body: Buffer;
  /** The body had to be replaced by our own JSON (it could not be decoded). */
  replaced: boolean;
}

/**
 * An upstream error body, decoded and redacted. Sent without content-encoding.
 * What cannot be decoded cannot be proven clean, so it is withheld.
 */
export function cleanErrorBody(raw: Buffer, encoding: string | string[] | undefined, key: string, status: number): CleanBody {
  try {
    return { body: Buffer.from(redactKey(decodeBody(raw, encoding).toString('utf8'), key)), replaced: false };
  } catch {
    const message = `The upstream answered ${status}; its body could not be checked for secrets and was withheld.`;
    return { body: Buffer.from(JSON.stringify({ error: { message, type: 'proxy_error', code: 'upstream_error' } })), replaced: true };
  }
}
