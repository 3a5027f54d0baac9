import { request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, type AgentOptions } from 'node:https';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';

/**
 * An https.Agent whose connections are CONNECT tunnels through `proxy`: with
 * keepAlive, the pool keeps them and a tunnel serves request after request,
 * unlike https-proxy-agent, which opens one per request.
 */
export class TunnelAgent extends HttpsAgent {
  constructor(
    private readonly proxy: URL,
    opts: AgentOptions,
  ) {
    super(opts);
  }

  override createConnection(options: { host?: string; port?: number; servername?: string }, callback: (err: Error | null, socket?: Duplex) => void): undefined {
    const authority = `${options.host}:${options.port}`;
    const req = httpRequest({ host: this.proxy.hostname, port: this.proxy.port, method: 'CONNECT', path: authority, headers: { host: authority }, agent: false });
    req.once('connect', (res, socket) => {
      if (res.statusCode !== 200) return callback(new Error(`CONNECT ${res.statusCode}`));
      callback(null, tlsConnect({ socket, servername: options.servername ?? options.host }));
    });
    req.once('error', (err) => callback(err));
    req.end();
    return undefined;
  }
}
