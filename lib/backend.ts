import { native } from './native';
import { expectInteger } from './validate';

export interface BackendInfo {
  /** The CPU kernels in use: chosen at load, or forced with MOE_FORCE_ISA. */
  isa: 'avx512' | 'avx2' | 'neon' | 'scalar';
  /** Threads of the shared pool (the caller included). */
  threads: number;
  /** Every ISA this CPU and build can run, best first. */
  supportedIsas: string[];
  cuda: { compiled: boolean; devices: number; reason?: string };
}

export function backendInfo(): BackendInfo {
  return native().backendInfo();
}

/** Sets the size of the shared thread pool (1..256); the default is the number of CPUs, or MOE_THREADS. */
export function setThreads(threads: number): void {
  native().setThreads(expectInteger(threads, 'threads', 1, 256));
}

/** fp32 FMA throughput of the active ISA with `threads` threads busy at once, in GFLOP/s (a benchmark ceiling). */
export function measureFmaPeak(threads: number, seconds = 0.3): number {
  return native().measureFmaPeak(expectInteger(threads, 'threads', 1, 256), seconds);
}

/** Streaming read bandwidth with `threads` threads over `bytes` (default 256 MiB), in GB/s, best of `passes`. */
export function measureReadBandwidth(threads: number, bytes = 256 * 2 ** 20, passes = 3): number {
  return native().measureReadBandwidth(expectInteger(threads, 'threads', 1, 256), bytes, passes);
}
