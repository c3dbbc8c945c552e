// Whole-process timing for the sync benchmark: wall time from spawn to exit (start-up included),
// a hard timeout, and the peak RSS of the measured process.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const TIME_BIN = '/usr/bin/time';

export interface TimedRun {
  wallS: number;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  /** Peak resident set of the spawned process, kB; null when not measured. */
  peakRssKb: number | null;
  rssMethod: 'time' | 'proc' | null;
}

export interface RunOptions {
  timeoutMs: number;
  /** Measure the peak RSS of `cmd` itself (not meaningful for a shell pipeline). */
  measureRss?: boolean;
  /** Poll /proc/<pid>/status VmHWM even when /usr/bin/time exists (tests the fallback). */
  forcePoll?: boolean;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

// Children run in their own process group so a timeout or Ctrl-C can kill a whole pipeline
// (sh and both psql processes), and a terminal's SIGINT does not reach them before we decide.
const live = new Set<ChildProcess>();
let stopped = false;

/** Kills every running child's process group; later runTimed calls throw instead of spawning. */
export function killAllChildren(): void {
  stopped = true;
  for (const c of live) {
    try { process.kill(-c.pid!, 'SIGKILL'); } catch { /* already gone */ }
  }
}

let seq = 0;

export async function runTimed(cmd: string, args: string[], opts: RunOptions): Promise<TimedRun> {
  if (stopped) throw new Error('stopping: no new child processes');
  const useTime = Boolean(opts.measureRss) && !opts.forcePoll && existsSync(TIME_BIN);
  const timeFile = join(tmpdir(), `bench-sync-time-${process.pid}-${++seq}`);
  const [bin, argv] = useTime ? [TIME_BIN, ['-f', '%e %M', '-o', timeFile, cmd, ...args]] : [cmd, args];
  const t0 = performance.now();
  const child = spawn(bin, argv, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], cwd: opts.cwd, env: opts.env ?? process.env });
  live.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });

  let hwmKb = 0;
  const poll = opts.measureRss && !useTime
    ? setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) hwmKb = Math.max(hwmKb, Number(m[1]));
      } catch { /* exited between ticks */ }
    }, 50)
    : null;

  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ }
  }, opts.timeoutMs);

  let wallS = 0;
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', () => { wallS = (performance.now() - t0) / 1000; });
    child.on('close', (c, s) => resolve({ code: c, signal: s }));
  }).finally(() => {
    clearTimeout(timer);
    if (poll) clearInterval(poll);
    live.delete(child);
  });

  let peakRssKb: number | null = null;
  let stderrOut = stderr;
  if (useTime) {
    try {
      const lines = readFileSync(timeFile, 'utf8').trim().split('\n');
      // GNU time prefixes "Command exited with non-zero status N" when the command fails.
      const m = /^([\d.]+) (\d+)$/.exec(lines.at(-1) ?? '');
      if (m) peakRssKb = Number(m[2]);
    } catch { /* killed before time wrote it */ }
    rmSync(timeFile, { force: true });
  } else if (opts.measureRss) {
    peakRssKb = hwmKb || null;
  }
  if (timedOut) stderrOut += `\n[bench] killed after ${opts.timeoutMs / 1000} s timeout`;
  return {
    wallS, exitCode: code, signal, timedOut, stdout, stderr: stderrOut, peakRssKb,
    rssMethod: opts.measureRss ? (useTime ? 'time' : 'proc') : null,
  };
}
