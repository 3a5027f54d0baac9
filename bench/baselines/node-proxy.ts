/**
 * The floor for any Node proxy: http.createServer piping to http(s).request,
 * swapping only the Authorization header. TUNNEL=pool keeps CONNECT tunnels
 * alive (an https.Agent whose connections are tunnels); TUNNEL=per-request is
 * the naive way existing sidecars work (https-proxy-agent, no keep-alive: a
 * CONNECT and a TLS handshake for every request).
 */
import { createServer, request as httpRequest, Agent as HttpAgent, type IncomingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest, type AgentOptions } from 'node:https';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { HttpsProxyAgent } from 'https-proxy-agent';

const upstream = new URL(process.env.UPSTREAM_URL!);
const proxy = process.env.HTTPS_PROXY ? new URL(process.env.HTTPS_PROXY) : undefined;
const key = process.env.OPENAI_API_KEY!;
const tls = upstream.protocol === 'https:';

class TunnelAgent extends HttpsAgent {
  constructor(opts: AgentOptions) {
    super(opts);
  }
  override createConnection(options: { host?: string; port?: number; servername?: string }, callback: (err: Error | null, socket?: Duplex) => void): undefined {
    const authority = `${options.host}:${options.port}`;
    const req = httpRequest({ host: proxy!.hostname, port: proxy!.port, method: 'CONNECT', path: authority, headers: { host: authority }, agent: false });
    req.once('connect', (res, socket) => {
      if (res.statusCode !== 200) return callback(new Error(`CONNECT ${res.statusCode}`));
      callback(null, tlsConnect({ socket, servername: options.servername ?? options.host }));
    });
    req.once('error', (err) => callback(err));
    req.end();
    return undefined;
  }
}

const agent = !tls
  ? new HttpAgent({ keepAlive: true })
  : !proxy
    ? new HttpsAgent({ keepAlive: true })
    : process.env.TUNNEL === 'per-request'
      ? new HttpsProxyAgent(proxy, { keepAlive: false })
      : new TunnelAgent({ keepAlive: true });
const send = tls ? httpsRequest : httpRequest;

createServer((req, res) => {
  const headers: IncomingHttpHeaders = { ...req.headers, host: upstream.host, authorization: `Bearer ${key}` };
  const up = send(
    { hostname: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers, agent },
    (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    },
  );
  up.on('error', () => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  res.on('close', () => up.destroy());
  req.pipe(up);
}).listen(Number(process.env.PORT), '127.0.0.1');
