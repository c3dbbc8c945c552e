import { runSync, type RunOptions, type RunResult } from './run.ts';

export interface ReconcileLoop {
  /** Stops after the run in progress (if any) and resolves when it has. */
  stop(): Promise<void>;
  /** Starts a run now unless one is in progress; resolves with its result. */
  runNow(): Promise<RunResult | null>;
}

/**
 * Runs runSync every `intervalMs` in this process (`elara-sync run --every 5m`, and the embedded
 * `npm start`). Runs never overlap here, and the advisory lock keeps them from overlapping with a
 * CronJob or a manual run elsewhere. The first run starts after `firstDelayMs` (default 0).
 */
export function startReconcileLoop(
  options: RunOptions & { intervalMs: number; firstDelayMs?: number; onResult?: (r: RunResult) => void; onError?: (e: unknown) => void },
): ReconcileLoop {
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let current: Promise<RunResult | null> | null = null;

  const runOnce = (): Promise<RunResult | null> => {
    if (current) return current;
    current = runSync(options)
      .then((r) => {
        options.onResult?.(r);
        return r;
      }, (e) => {
        options.onError?.(e);
        return null;
      })
      .finally(() => {
        current = null;
      });
    return current;
  };
  const schedule = (delay: number) => {
    if (stopped) return;
    timer = setTimeout(async () => {
      await runOnce();
      schedule(options.intervalMs);
    }, delay);
  };
  schedule(options.firstDelayMs ?? 0);

  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await current;
    },
    runNow: () => runOnce(),
  };
}
