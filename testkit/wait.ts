import { readdirSync, readFileSync } from 'node:fs';

/**
 * Polls a real condition until it holds or `timeoutMs` passes; returns the last
 * value read. Readiness is awaited this way, never by a fixed sleep.
 */
export async function until<T>(read: () => T | Promise<T>, ok: (v: T) => boolean, timeoutMs = 5000, intervalMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Open file descriptors of a process (this one by default): sockets included. */
export function openFds(pid: number | 'self' = 'self'): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** A process's resident memory now (VmRSS) or at its peak (VmHWM), in MiB, from /proc. */
export function memoryMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}
