import type { BackendCapabilities, BackendName, Feature } from './capabilities';
import { loadedBinary, native } from './native';
import type { LoadedBinary } from './native-loader';
import type { MpiInfo, NativeReadProbe } from './native';
import { describe, rangeError, typeError } from './errors';
import { expectInteger } from './validate';

export interface BackendInfo {
  /** The CPU kernels in use: chosen at load, or forced with MOE_FORCE_ISA. */
  isa: 'avx512_bf16' | 'avx512' | 'avx2' | 'neon_dotprod' | 'neon' | 'scalar';
  /** Threads of the shared pool (the caller included). */
  threads: number;
  /** Every ISA this CPU and build can run, best first. */
  supportedIsas: string[];
  cuda: { compiled: boolean; devices: number; reason?: string };
  /**
   * MPI for expert-parallel layers (a build with `npm run build:mpi`): started by the first such layer, in a
   * process that mpirun started (or alone, as a job of one).
   */
  mpi: MpiInfo;
  /**
   * What each backend offers, whether or not it is built here (the core's tables: native/include/moe/capabilities.h),
   * and how it holds the weight dtypes; a config or call asking a backend for a feature it lacks is refused with
   * one message naming the feature and what the backend offers.
   */
  backends: Record<BackendName, BackendCapabilities>;
  /** Each feature's description, as the refusals word it. */
  features: Record<Feature, string>;
  /** The addon file in use: the prebuilt one shipped for this platform, the package's own source build, or pinned. */
  binary: LoadedBinary;
}

export function backendInfo(): BackendInfo {
  return { ...native().backendInfo(), binary: loadedBinary() };
}

/** Sets the size of the shared thread pool (1..256); the default is the number of CPUs, or MOE_THREADS. */
export function setThreads(threads: number): void {
  native().setThreads({ threads: expectInteger(threads, 'threads', 1, 256) });
}

/** fp32 FMA throughput of the active ISA with `threads` threads busy at once, in GFLOP/s (a benchmark ceiling). */
export function measureFmaPeak(threads: number, seconds = 0.3): number {
  expectInteger(threads, 'threads', 1, 256);
  if (typeof seconds !== 'number') throw typeError('seconds to be a number', describe(seconds));
  // (NaN was measured for the shortest time, Infinity silently for 10 s: both are refused)
  if (!(seconds >= 0.01 && seconds <= 10)) throw rangeError('seconds to be in [0.01, 10]', `${seconds}`);
  return native().measureFmaPeak({ threads, seconds });
}

/** Streaming read bandwidth with `threads` threads over a new buffer of `bytes` (default 256 MiB), in GB/s, best of `passes`. */
export function measureReadBandwidth(threads: number, bytes = 256 * 2 ** 20, passes = 3): number {
  const probe = new ReadProbe(bytes);
  try {
    return probe.measure(threads, passes);
  } finally {
    probe.dispose();
  }
}

/**
 * A buffer of `bytes` (default 256 MiB, far larger than the caches) in memory, allocated like packed weights and
 * written once, to measure the streaming read bandwidth again and again: measure() allocates nothing, so a
 * benchmark can take the ceiling between its other measurements without touching fresh memory (which a VM may
 * fault in from its host, slowing down whatever runs next). Free it with dispose().
 */
export class ReadProbe implements Disposable {
  private handle: NativeReadProbe | null;

  constructor(bytes = 256 * 2 ** 20) {
    this.handle = new (native().NativeReadProbe)({ bytes: expectInteger(bytes, 'bytes', 2 ** 20, 2 ** 34) });
  }

  /** GB/s with `threads` threads, each reading its own part, best of `passes`. */
  measure(threads: number, passes = 1): number {
    if (!this.handle) throw typeError('a read probe that is not disposed', 'a disposed ReadProbe');
    return this.handle.measure({ threads: expectInteger(threads, 'threads', 1, 256), passes: expectInteger(passes, 'passes', 1, 100) });
  }

  /** Frees the buffer; measure() throws afterwards. */
  dispose(): void {
    this.handle?.dispose();
    this.handle = null;
  }

  /** `using x = ...` (TypeScript 5.2+, Node 20.4+ / 18.18+) disposes it at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}
