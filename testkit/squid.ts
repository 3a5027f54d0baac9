import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Namespace } from './netns.js';
import { until } from './wait.js';

/**
 * A real Squid from Debian on loopback, configured like the product's egress:
 * CONNECT only to allowlisted domains, names resolved from a hosts file (no DNS),
 * WebSocket upgrades passed. Each instance has its own -n name, port and pid file.
 */

export const SQUID_BIN = ['/usr/sbin/squid', '/usr/local/sbin/squid'].find((p) => existsSync(p));
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

export interface Squid {
  /** The proxy URL a sidecar uses, credentials included when Squid wants them. */
  url: string;
  host: string;
  port: number;
  /** Squid's process (the entrypoint execs it), while it runs. */
  readonly pid: number | undefined;
  /** Access log lines written so far (Squid logs a tunnel when it closes). */
  accessLog(): string[];
  /** CONNECT lines in the access log. */
  connects(): string[];
  stop(): Promise<void>;
  /** Stops and starts again on the same port: pooled tunnels die. */
  restart(): Promise<void>;
}

export interface SquidOptions {
  /** Allowed destination domains (dstdomain syntax). */
  allow: string[];
  /** name → address lines for Squid's hosts_file. */
  hosts: Record<string, string>;
  port?: number;
}

export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

const accepts = (port: number, host: string): Promise<boolean> =>
  new Promise((resolve) => {
    const s = connect({ port, host }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });

/** Resolves once something accepts TCP on host:port; polls a real connect, bounded. */
export async function waitForPort(port: number, host = '127.0.0.1', timeoutMs = 15_000): Promise<void> {
  if (!(await until(() => accepts(port, host), (ok) => ok, timeoutMs, 50))) {
    throw new Error(`nothing listened on ${host}:${port} within ${timeoutMs} ms`);
  }
}

const hostsFile = (dir: string, hosts: Record<string, string>): string => {
  const file = join(dir, 'hosts');
  writeFileSync(
    file,
    Object.entries(hosts)
      .map(([host, ip]) => `${ip} ${host}`)
      .join('\n') + '\n',
  );
  return file;
};

/** A directory Squid may write in after it drops to its effective user (proxy) when started as root. */
const squidDir = (): string => {
  const dir = mkdtempSync(join(tmpdir(), 'api-proxy-squid-'));
  chmodSync(dir, 0o777);
  return dir;
};

export async function startSquid(opts: SquidOptions): Promise<Squid> {
  if (!SQUID_BIN) throw new Error('squid is not installed (apt-get install squid)');
  const dir = squidDir();
  const port = opts.port ?? (await freePort());
  const name = `apiproxytest${port}`; // -n takes letters and digits only
  const conf = join(dir, 'squid.conf');
  writeFileSync(
    conf,
    `http_port 127.0.0.1:${port}
pid_filename ${dir}/squid.pid
access_log stdio:${dir}/access.log squid
cache_log ${dir}/cache.log
cache_store_log none
coredump_dir ${dir}
netdb_filename none
pinger_enable off
logfile_rotate 0
cache deny all
cache_mem 8 MB
hosts_file ${hostsFile(dir, opts.hosts)}
dns_nameservers 127.0.0.1
dns_timeout 2 seconds
visible_hostname api-proxy-test
via off
forwarded_for delete
shutdown_lifetime 0 seconds
http_upgrade_request_protocols websocket allow all
acl allowed dstdomain ${opts.allow.join(' ')}
acl CONNECT method CONNECT
http_access allow CONNECT allowed
http_access allow allowed
http_access deny all
`,
  );
  const check = spawnSync(SQUID_BIN, ['-k', 'parse', '-f', conf, '-n', name], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`squid.conf does not parse:\n${check.stderr}`);
  return launch(dir, { host: '127.0.0.1', port, auth: '' }, [SQUID_BIN, '-N', '-f', conf, '-n', name]);
}

/** The product's Squid files (squid/), from this file as source (testkit/) or built (dist/testkit/). */
const PRODUCT_SQUID_DIR = ['../squid/', '../../squid/'].map((rel) => fileURLToPath(new URL(rel, import.meta.url))).find((dir) => existsSync(join(dir, 'squid.conf')))!;
export const PRODUCT_SQUID_CONF = join(PRODUCT_SQUID_DIR, 'squid.conf');
export const SQUID_ENTRYPOINT = join(PRODUCT_SQUID_DIR, 'entrypoint.sh');

/**
 * The product's squid.conf, moved from the container into a test directory: its
 * log destinations and the paths of what the entrypoint writes change, and names
 * resolve from a hosts file (no DNS here). The port and the policy lines are left
 * exactly as shipped; a line this expects and does not find fails loudly, so the
 * two cannot drift apart.
 */
export function productSquidConf(dir: string, hosts: Record<string, string>): string {
  let conf = readFileSync(PRODUCT_SQUID_CONF, 'utf8');
  const swap = (from: string, to: string): void => {
    if (!conf.includes(from)) throw new Error(`squid/squid.conf no longer holds ${JSON.stringify(from)}: update productSquidConf`);
    conf = conf.replace(from, to);
  };
  swap('"/run/squid/allowed-domains"', `"${dir}/allowed-domains"`);
  swap('\ninclude /run/squid/auth.conf\n', `\ninclude ${dir}/auth.conf\n`);
  // The container's stdout and stderr are pipes Squid can reopen; a test's are not.
  swap('access_log stdio:/dev/stdout ', `access_log stdio:${dir}/access.log `);
  swap('cache_log stdio:/dev/stderr', `cache_log ${dir}/cache.log`);
  return `${conf}\nhosts_file ${hostsFile(dir, hosts)}\ndns_nameservers 127.0.0.1\ndns_timeout 2 seconds\n`;
}

/** The proxy password the product's Squid gets in tests, unless one names another. */
export const TEST_PROXY_PASSWORD = 'pw-Hq3vTz8KmWx2RcYj5NbLsFd';
export const TEST_PROXY_USER = 'api-proxy';
/** Debian's proxy user, as which the image runs Squid (USER 13:13). */
const PROXY_UID = '13';

export interface ProductSquidOptions {
  hosts: Record<string, string>;
  /** The container's environment: SQUID_ALLOWED_DOMAINS, SQUID_PROXY_PASSWORD, SQUID_AUTH, … */
  env?: Record<string, string>;
  /** Contents of the mounted allowlist file, when one is mounted. */
  allowlist?: string;
}

/** Where the product's entrypoint reads and writes, for a run on this machine; the test password unless `env` says otherwise. */
export function productSquidEnv(dir: string, conf: string, opts: Pick<ProductSquidOptions, 'env' | 'allowlist'>): Record<string, string> {
  const allowlistFile = join(dir, 'allowlist.txt');
  if (opts.allowlist !== undefined) writeFileSync(allowlistFile, opts.allowlist);
  return {
    PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin`,
    SQUID_CONF: conf,
    SQUID_RUN_DIR: dir,
    SQUID_ALLOWLIST_FILE: allowlistFile,
    SQUID_PROXY_PASSWORD: TEST_PROXY_PASSWORD,
    ...opts.env,
  };
}

/**
 * The product's Squid (squid/entrypoint.sh and squid/squid.conf) as the image
 * runs it: as user proxy, on port 3128, here inside `netns` (its own host).
 */
export async function startProductSquid(netns: Namespace, opts: ProductSquidOptions): Promise<Squid> {
  if (!SQUID_BIN) throw new Error('squid is not installed (apt-get install squid)');
  if (!SETPRIV) throw new Error('setpriv is not installed (apt-get install util-linux)');
  const dir = squidDir();
  const conf = join(dir, 'squid.conf');
  writeFileSync(conf, productSquidConf(dir, opts.hosts));
  const env = productSquidEnv(dir, conf, opts);
  // Squid runs as proxy, which may not be able to enter the checkout (a clone in a
  // 0700 directory): it runs a copy of the shipped entrypoint from its own directory.
  const entrypoint = join(dir, 'entrypoint.sh');
  copyFileSync(SQUID_ENTRYPOINT, entrypoint);
  chmodSync(entrypoint, 0o755);
  // The kernel clears a parent-death signal when the uid changes: this setpriv sets it
  // again after its own change, so a test process killed hard takes its Squid with it.
  const command = netns.argv([SETPRIV, '--reuid', PROXY_UID, '--regid', PROXY_UID, '--clear-groups', '--pdeathsig', 'KILL', entrypoint, '-n', `apiproxyproduct${process.pid}`]);
  const auth = env.SQUID_AUTH === 'off' ? '' : `${env.SQUID_PROXY_USER ?? TEST_PROXY_USER}:${encodeURIComponent(env.SQUID_PROXY_PASSWORD ?? '')}@`;
  return launch(dir, { host: netns.peerAddress, port: 3128, auth }, command, env);
}

/** Runs Squid (directly or through an entrypoint) in the foreground until stopped; restartable. */
async function launch(dir: string, at: { host: string; port: number; auth: string }, command: string[], env?: Record<string, string>): Promise<Squid> {
  const { host, port } = at;
  let child: ChildProcess;
  const start = async (): Promise<void> => {
    // Squid must not outlive a test process that is killed: the kernel signals it when we die.
    const argv = SETPRIV ? [SETPRIV, '--pdeathsig', 'KILL', ...command] : command;
    child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env });
    process.once('exit', () => child.kill('SIGKILL'));
    let stderr = '';
    child.stderr?.on('data', (d) => (stderr += d));
    const exited = new Promise<never>((_, reject) =>
      child.once('exit', (code) => reject(new Error(`squid exited (${code}) before listening:\n${stderr}`))),
    );
    exited.catch(() => undefined);
    await Promise.race([waitForPort(port, host), exited]);
  };
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  await start();

  const accessLog = (): string[] => {
    const file = join(dir, 'access.log');
    // Strict: a log line that is not UTF-8 fails the reader, as it would a JSON consumer.
    return existsSync(file) ? new TextDecoder('utf-8', { fatal: true }).decode(readFileSync(file)).split('\n').filter(Boolean) : [];
  };
  return {
    url: `http://${at.auth}${host}:${port}`,
    host,
    port,
    get pid() {
      return child.exitCode === null && child.signalCode === null ? child.pid : undefined;
    },
    accessLog,
    connects: () => accessLog().filter((l) => / CONNECT |"method":"CONNECT"/.test(l)),
    stop: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
    restart: async () => {
      await stop();
      await start();
    },
  };
}
