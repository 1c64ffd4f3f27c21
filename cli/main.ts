/**
 * `npm start`: the main job. Builds a Mixtral-shaped MoE layer with seeded random weights (or, with --checkpoint,
 * loads one MoE layer of a Hugging Face checkpoint), runs a batch of tokens through it a few times, and prints
 * speed, the backend used and how the router spread the tokens.
 */
import { cacheJob } from './cache-job';
import {
  ACTIVATIONS,
  Activation,
  MoEConfig,
  MoELayer,
  Tensor,
  WEIGHT_DTYPES,
  WeightDtype,
  backendInfo,
  layerFlops,
  pretrained,
  setThreads,
} from '../lib';
import { FlagSpec, median, parseFlags, usage } from '../tools/flags';

const FLAGS: FlagSpec[] = [
  { name: 'tokens', help: 'tokens in the batch', default: 512 },
  { name: 'd-model', help: 'model width', default: 1024 },
  { name: 'd-hidden', help: 'expert hidden width', default: 2816 },
  { name: 'experts', help: 'number of experts', default: 8 },
  { name: 'top-k', help: 'experts per token', default: 2 },
  { name: 'activation', help: ACTIVATIONS.join(' | '), default: 'swiglu' },
  { name: 'dtype', help: `how the expert weights are stored: ${WEIGHT_DTYPES.join(' | ')} (checkpoint: its own, bf16)`, default: '' },
  {
    name: 'checkpoint',
    help: 'a Hugging Face checkpoint directory (config.json + safetensors) or a GGUF file to load a layer of',
    default: '',
  },
  { name: 'layer', help: 'with --checkpoint: the decoder layer (default: its first MoE layer)', default: -1 },
  { name: 'threads', help: 'threads (0 = all cores)', default: 0 },
  { name: 'repeat', help: 'timed runs after one warm-up', default: 5 },
  { name: 'seed', help: 'seed of the weights and inputs', default: 1 },
  { name: 'async', help: 'use forward() (off the event loop) instead of forwardSync()', default: false },
  {
    name: 'cache-bytes',
    help: 'with --checkpoint: every MoE layer on one ExpertCache of this many bytes, --tokens decode steps through them',
    default: 0,
  },
  { name: 'store-dir', help: 'with --cache-bytes: where the expert stores go (default: .moe-store beside the checkpoint)', default: '' },
  { name: 'help', help: 'show this help', default: false },
];

function randomLayer(f: Record<string, string | number | boolean>): MoELayer {
  const config: MoEConfig = {
    dModel: Number(f['d-model']),
    dHidden: Number(f['d-hidden']),
    numExperts: Number(f.experts),
    topK: Number(f['top-k']),
    activation: String(f.activation) as Activation,
    weightDtype: (String(f.dtype) || 'float32') as WeightDtype,
  };
  return MoELayer.random(config, { seed: Number(f.seed) });
}

/** One MoE layer of a checkpoint, with a progress line while it reads. */
async function loadLayer(dir: string, layer: number, dtype: string): Promise<MoELayer> {
  const about = await pretrained.inspect(dir);
  const which = layer >= 0 ? layer : about.moeLayers[0];
  console.log(
    `checkpoint: ${dir} · ${about.family} (model_type ${about.modelType}) · ${about.numLayers} layers, MoE: ${summarize(about.moeLayers)} · loading layer ${which}`,
  );
  const tty = process.stdout.isTTY;
  let shown = -1;
  const result = await MoELayer.fromPretrained(dir, {
    layer: which,
    ...(dtype ? { weightDtype: dtype as WeightDtype } : {}),
    onProgress: (p) => {
      const pct = p.totalBytes ? Math.floor((100 * p.bytesRead) / p.totalBytes) : 0;
      if (p.phase === 'read' && pct !== shown && (tty || pct % 25 === 0)) {
        shown = pct;
        const line = `  reading ${pct}% of ${(p.totalBytes / 2 ** 20).toFixed(0)} MiB${p.what ? ` (${p.what})` : ''}`;
        if (tty) process.stdout.write(`\r${line.padEnd(60)}`);
        else console.log(line);
      }
      if (p.phase === 'pack') {
        if (tty) process.stdout.write('\n');
        console.log('  packing the weights for the kernels');
      }
      // A GGUF file: what each expert tensor's type became (grouped: one line per type and outcome).
      if (p.phase === 'done' && p.conversions) {
        const seen = new Map<string, number>();
        for (const c of p.conversions) {
          const key = `${c.from} -> ${c.to} (${c.exact ? 'exact' : 'rounded'})`;
          seen.set(key, (seen.get(key) ?? 0) + 1);
        }
        for (const [key, n] of seen) console.log(`  GGUF experts: ${key}, ${n} tensor${n > 1 ? 's' : ''}`);
      }
    },
  });
  return result;
}

function describeRouter(c: MoELayer['config']): string {
  const r = c.router as Record<string, unknown>;
  const extras = Object.entries(r)
    .filter(([k, v]) => k !== 'kind' && v !== undefined && !(typeof v === 'object'))
    .map(([k, v]) => `${k} ${v}`);
  return `${r.kind}${extras.length ? ` (${extras.join(', ')})` : ''}`;
}

function summarize(layers: number[]): string {
  if (layers.length > 2 && layers.every((l, i) => i === 0 || l === layers[i - 1] + 1)) return `${layers[0]}-${layers[layers.length - 1]}`;
  return layers.length > 10 ? `${layers.slice(0, 10).join(', ')}, ...` : layers.join(', ');
}

function bar(value: number, max: number, width: number): string {
  const n = max === 0 ? 0 : Math.round((value / max) * width);
  return '█'.repeat(n) + '·'.repeat(width - n);
}

async function main(): Promise<void> {
  const f = parseFlags(process.argv.slice(2), FLAGS);
  if (f.help) {
    process.stdout.write(usage('npm start -- [flags]   run an MoE layer on random data and report its speed', FLAGS));
    return;
  }
  if (Number(f.threads) > 0) setThreads(Number(f.threads));
  if (Number(f['cache-bytes']) > 0) {
    if (!f.checkpoint) throw new Error('--cache-bytes needs --checkpoint (a model whose layers to serve from disk)');
    return cacheJob(
      String(f.checkpoint),
      Number(f['cache-bytes']),
      Number(f.tokens),
      String(f.dtype),
      String(f['store-dir']),
      Number(f.seed),
    );
  }
  const tokens = Number(f.tokens);
  const info = backendInfo();
  console.log(`moe-kernels · isa ${info.isa} · ${info.threads} thread${info.threads === 1 ? '' : 's'} · ${info.binary.origin} binary`);
  let t0 = performance.now();
  const layer = f.checkpoint ? await loadLayer(String(f.checkpoint), Number(f.layer), String(f.dtype)) : randomLayer(f);
  const buildMs = performance.now() - t0;
  const config = layer.config;
  console.log(
    `layer: dModel ${config.dModel}, dHidden ${config.dHidden}, ${config.numExperts} experts, top-${config.topK}, ` +
      `${config.activation}, router ${describeRouter(config)}` +
      (config.sharedExperts > 0
        ? `, ${config.sharedExperts} shared expert${config.sharedExperts > 1 ? 's' : ''} of ${config.sharedHidden}`
        : '') +
      `, ${config.weightDtype} weights (${(layer.packedBytes / 2 ** 20).toFixed(1)} MiB packed, ${f.checkpoint ? 'loaded' : 'built'} in ${(buildMs / 1000).toFixed(2)} s)`,
  );
  const x = Tensor.randn([tokens, config.dModel], { seed: Number(f.seed) + 1 });
  const run = () => (f.async ? layer.forward(x) : Promise.resolve(layer.forwardSync(x)));
  let result = await run(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < Number(f.repeat); i++) {
    t0 = performance.now();
    result = await run();
    times.push(performance.now() - t0);
  }
  const ms = median(times);
  const flops =
    layerFlops(config, tokens) +
    (config.sharedExperts > 0
      ? layerFlops({ ...config, numExperts: config.sharedExperts, topK: config.sharedExperts, dHidden: config.sharedHidden }, tokens)
      : 0);
  console.log(`batch: ${tokens} token${tokens === 1 ? '' : 's'}, ${f.async ? 'forward (async)' : 'forwardSync'}, ${times.length} runs`);
  console.log(
    `median ${ms.toFixed(2)} ms (min ${Math.min(...times).toFixed(2)}, max ${Math.max(...times).toFixed(2)}) · ` +
      `${Math.round((tokens / ms) * 1000)} tokens/s · ${(flops / ms / 1e6).toFixed(1)} GFLOP/s`,
  );
  const counts = Array.from(result.routing.tokensPerExpert);
  const max = Math.max(...counts);
  console.log('tokens per expert:');
  const shown = counts.length <= 64 ? counts.length : 64;
  for (let e = 0; e < shown; e++) console.log(`  expert ${String(e).padStart(3)} │${bar(counts[e], max, 40)} ${counts[e]}`);
  if (shown < counts.length) console.log(`  ... ${counts.length - shown} more experts`);
  layer.dispose();
}

main().catch((err: Error) => {
  console.error(err.message);
  process.exit(1);
});
