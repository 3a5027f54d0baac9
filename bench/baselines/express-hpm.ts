/**
 * The design card's way: an Express app whose forwarding is
 * http-proxy-middleware, given the fairest agent it can have, a kept-alive
 * CONNECT tunnel pool (TunnelAgent) rather than https-proxy-agent's tunnel per
 * request. The key goes in as a fixed header (setting it in the proxyReq hook
 * throws ERR_HTTP_HEADERS_SENT once the agent connects asynchronously).
 */
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import express from 'express';
import { createProxyMiddleware } from 'http-proxy-middleware';
import { TunnelAgent } from './tunnel-agent.js';

const upstream = new URL(process.env.UPSTREAM_URL!);
const proxy = process.env.HTTPS_PROXY ? new URL(process.env.HTTPS_PROXY) : undefined;
const key = process.env.OPENAI_API_KEY!;
const agent = upstream.protocol !== 'https:' ? new HttpAgent({ keepAlive: true }) : proxy ? new TunnelAgent(proxy, { keepAlive: true }) : new HttpsAgent({ keepAlive: true });

const app = express();
app.disable('x-powered-by');
app.use(
  createProxyMiddleware({
    target: upstream.origin,
    changeOrigin: true,
    agent,
    headers: { authorization: `Bearer ${key}` },
  }),
);
app.listen(Number(process.env.PORT), '127.0.0.1');
