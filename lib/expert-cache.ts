/**
 * ExpertCache: one memory budget for the routed experts of every layer built on it (MoELayer.fromPretrained with
 * `cache`). Each layer's experts live packed in a store file on disk (written once, on first use); a forward routes,
 * asks for its experts at once, computes the resident ones while the missing ones are read (positional reads on the
 * cache's I/O threads), and each missing one as soon as it is in. Outputs are bitwise those of the layer holding
 * every expert, whatever the budget.
 */
import { describe, rangeError, typeError } from './errors';
import { NativeExpertCache, NativeExpertCacheStats, native } from './native';
import { expectInteger, expectOptions } from './validate';

export type CachePolicy = 'lru' | 'lfru';

export interface ExpertCacheOptions {
  /** The budget, in bytes, for the routed experts of every layer on this cache together. */
  bytes: number;
  /**
   * Which expert leaves when the budget is full: 'lfru' (default) the lowest frequency-with-recency score, each use
   * counting 1 and halving every `halfLife` forwards of its layer (LRFU, Lee et al. 2001), so the experts a layer
   * keeps choosing stay; 'lru' the least recently used (Mixtral-offloading's policy).
   */
  policy?: CachePolicy;
  /** Reads in flight at once (default 4: an NVMe drive wants several). */
  ioThreads?: number;
  /** 'lfru': forwards of a layer after which a use counts half (default 32). */
  halfLife?: number;
}

/** Counts since the cache was made or resetStats(). */
export interface CacheCounts {
  /** Experts a forward found resident (or being read by a prefetch) / had to read. */
  hits: number;
  misses: number;
  /** Reads started by MoELayer.prefetch, and of those, ones a forward then used. */
  prefetches: number;
  prefetchHits: number;
  reads: number;
  readErrors: number;
  bytesRead: number;
  /** Milliseconds the reads took, summed over the I/O threads. */
  readMs: number;
  /** Milliseconds forwards waited for bytes with nothing left to compute (what the overlap did not hide). */
  waitMs: number;
  evictions: number;
}

export interface LayerCacheStats extends CacheCounts {
  /** The layer, as fromPretrained named it ('<checkpoint> layer N'). */
  label: string;
  residentBytes: number;
  residentExperts: number;
}

export interface ExpertCacheStats extends CacheCounts {
  budgetBytes: number;
  residentBytes: number;
  /** The most bytes resident at once. */
  peakBytes: number;
  residentExperts: number;
  /**
   * Bytes resident past the budget: a forward needed more experts at once than the budget holds, and they leave as
   * soon as it is done.
   */
  overBudgetBytes: number;
  /** hits / (hits + misses), 0 before any forward. */
  hitRate: number;
  layers: LayerCacheStats[];
}

const POLICIES: readonly CachePolicy[] = ['lru', 'lfru'];

export class ExpertCache implements Disposable {
  readonly options: Readonly<Required<ExpertCacheOptions>>;
  private handle: NativeExpertCache | undefined;

  constructor(options: ExpertCacheOptions) {
    const o = expectOptions(options, 'options') as Partial<ExpertCacheOptions>;
    if (typeof o.bytes !== 'number') throw typeError('options.bytes to be a number of bytes', describe(o.bytes));
    const bytes = expectInteger(o.bytes, 'options.bytes', 1);
    const policy = o.policy ?? 'lfru';
    if (!POLICIES.includes(policy))
      throw rangeError(`options.policy to be one of ${POLICIES.map((p) => `'${p}'`).join(', ')}`, describe(policy));
    const ioThreads = expectInteger(o.ioThreads ?? 4, 'options.ioThreads', 1, 64);
    const halfLife = o.halfLife ?? 32;
    if (typeof halfLife !== 'number' || !Number.isFinite(halfLife) || halfLife <= 0)
      throw rangeError('options.halfLife to be a positive number of forwards', describe(halfLife));
    this.options = Object.freeze({ bytes, policy, ioThreads, halfLife });
    this.handle = new (native().NativeExpertCache)({ bytes, policy, ioThreads, halfLife });
  }

  /** Hits, misses, bytes read, read and wait time, evictions: in total and per layer. */
  stats(): ExpertCacheStats {
    const s: NativeExpertCacheStats = this.native().stats();
    const lookups = s.hits + s.misses;
    // (the binding's objects have exactly the public fields: its counts, per layer its label and resident bytes)
    return { ...s, hitRate: lookups > 0 ? s.hits / lookups : 0, layers: s.layers.map((l) => ({ ...l })) };
  }

  resetStats(): void {
    this.native().resetStats();
  }

  /** Drops every expert no forward is using (their memory goes back to the system); the stats stay. */
  clear(): void {
    this.native().clear();
  }

  get disposed(): boolean {
    return this.handle === undefined;
  }

  /** Frees the cached experts; layers built on the cache keep it alive (and working) until they are disposed too. */
  dispose(): void {
    this.handle?.dispose();
    this.handle = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** @internal The native cache, for the layers built on it. */
  native(): NativeExpertCache {
    if (!this.handle) throw typeError('an ExpertCache that is not disposed', 'a disposed ExpertCache');
    return this.handle;
  }
}

/** Whether `value` is an ExpertCache of this package (any realm). */
export function isExpertCache(value: unknown): value is ExpertCache {
  return value instanceof ExpertCache || Object.prototype.toString.call(value) === '[object ExpertCache]';
}
Object.defineProperty(ExpertCache.prototype, Symbol.toStringTag, { value: 'ExpertCache' });
