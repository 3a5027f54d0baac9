import type { IncomingMessage } from 'node:http';
import { WebSocket } from 'ws';

/** Opens a WebSocket and resolves on open, or with the refusal's status and body. */
export function openWebSocket(
  url: string,
  headers: Record<string, string>,
): Promise<{ ws?: WebSocket; refused?: { status: number; headers: IncomingMessage['headers']; body: string } }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once('open', () => resolve({ ws }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d));
      res.on('end', () => resolve({ refused: { status: res.statusCode ?? 0, headers: res.headers, body } }));
    });
    ws.once('error', reject);
  });
}

/** Sends `message` and collects JSON events until one of type `until` arrives. */
export function exchangeEvents(ws: WebSocket, message: object, until: string): Promise<Record<string, unknown>[]> {
  return new Promise((resolve, reject) => {
    const events: Record<string, unknown>[] = [];
    const onMessage = (data: Buffer): void => {
      const event = JSON.parse(data.toString()) as Record<string, unknown>;
      events.push(event);
      if (event.type === until) {
        ws.off('message', onMessage);
        resolve(events);
      }
    };
    ws.on('message', onMessage);
    ws.once('close', () => reject(new Error(`closed before ${until}`)));
    ws.send(JSON.stringify(message));
  });
}
