/**
 * `npm start -- --checkpoint DIR --cache-bytes N`: every MoE layer of a checkpoint on one ExpertCache (their routed
 * experts packed into stores on the first run), then `--tokens` decode steps through all of them, each layer
 * prefetching for the next; prints the speed and the cache's stats, in total and per layer.
 */
import { ExpertCache, ExpertCacheStats, MoELayer, Tensor, WeightDtype, pretrained } from '../lib';

const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

export async function cacheJob(dir: string, bytes: number, tokens: number, dtype: string, storeDir: string, seed: number): Promise<void> {
  const about = await pretrained.inspect(dir);
  const cache = new ExpertCache({ bytes });
  console.log(`checkpoint: ${dir} · ${about.family} · ${about.moeLayers.length} MoE layers on one expert cache of ${mb(bytes)}`);
  const layers: MoELayer[] = [];
  try {
    const t0 = performance.now();
    for (const layer of about.moeLayers) {
      const started = performance.now();
      let wrote = '';
      layers.push(
        await MoELayer.fromPretrained(dir, {
          layer,
          cache,
          ...(dtype ? { weightDtype: dtype as WeightDtype } : {}),
          ...(storeDir ? { storeDir } : {}),
          onProgress: (p) => {
            if (p.phase === 'store') wrote = `, its experts packed and written to ${p.what}`;
          },
        }),
      );
      console.log(`  layer ${layer}: ${((performance.now() - started) / 1000).toFixed(2)} s${wrote || ' (its expert store reused)'}`);
    }
    console.log(
      `loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s; resident per layer: ${mb(layers[0].packedBytes)} (router and shared experts)`,
    );
    const d = layers[0].config.dModel;
    let h = Tensor.randn([1, d], { seed });
    const t1 = performance.now();
    for (let t = 0; t < tokens; t++) {
      for (let l = 0; l < layers.length; l++) {
        if (l + 1 < layers.length) layers[l + 1].prefetch(h);
        const y = (await layers[l].forward(h)).output;
        // (a stand-in for the rest of the block: the residual, rescaled to unit RMS)
        const next = new Float32Array(d);
        let sum = 0;
        for (let i = 0; i < d; i++) sum += (next[i] = (h.data as Float32Array)[i] + (y.data as Float32Array)[i]) ** 2;
        const scale = sum > 0 ? 1 / Math.sqrt(sum / d) : 1;
        for (let i = 0; i < d; i++) next[i] *= scale;
        h = Tensor.from(next, [1, d]);
      }
    }
    const ms = performance.now() - t1;
    console.log(
      `decode: ${tokens} token${tokens === 1 ? '' : 's'} through ${layers.length} layers · ${((tokens / ms) * 1000).toFixed(2)} tokens/s`,
    );
    printStats(cache.stats(), ms);
  } finally {
    for (const l of layers) l.dispose();
    cache.dispose();
  }
}

function printStats(s: ExpertCacheStats, ms: number): void {
  console.log(
    `cache: hit rate ${(100 * s.hitRate).toFixed(1)}% (${s.hits} hits, ${s.misses} misses) · prefetched ${s.prefetches}, used ${s.prefetchHits} · ` +
      `read ${mb(s.bytesRead)} in ${s.reads} reads (${(s.readMs / Math.max(1, s.reads)).toFixed(2)} ms each) · ` +
      `compute waited ${s.waitMs.toFixed(0)} ms (${((100 * s.waitMs) / ms).toFixed(0)}%) · ${s.evictions} evictions · ` +
      `resident ${mb(s.residentBytes)} of ${mb(s.budgetBytes)} (peak ${mb(s.peakBytes)})`,
  );
  console.log('  layer                          hits  misses  read MiB  waited ms  resident');
  for (const l of s.layers)
    console.log(
      `  ${l.label.padEnd(28).slice(0, 28)} ${String(l.hits).padStart(6)} ${String(l.misses).padStart(7)} ${(l.bytesRead / 2 ** 20).toFixed(1).padStart(9)} ` +
        `${l.waitMs.toFixed(1).padStart(10)}  ${mb(l.residentBytes)}`,
    );
}
