/**
 * A script for `node -e` inside a container or namespace: tries a TCP connection
 * to each host:port and prints one JSON array of outcomes ('open', 'timeout',
 * or the error code). Parse it with `probeResults`.
 */
export function probeScript(targets: [string, number][]): string {
  return `
    const net = require('net');
    const probe = ([host, port]) => new Promise((resolve) => {
      const s = net.connect({ host, port, timeout: 3000 });
      s.on('connect', () => { s.destroy(); resolve('open'); });
      s.on('timeout', () => { s.destroy(); resolve('timeout'); });
      s.on('error', (e) => resolve(e.code));
    });
    Promise.all(${JSON.stringify(targets)}.map(probe)).then((r) => console.log(JSON.stringify(r)));
  `;
}

/** The outcomes a probe printed, in the order of its targets. */
export const probeResults = (stdout: string): string[] => JSON.parse(stdout.trim().split('\n').at(-1)!) as string[];
