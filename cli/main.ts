/**
 * `npm start`: the main job. Builds a Mixtral-shaped MoE layer with seeded random weights, runs a batch of
 * tokens through it a few times, and prints speed, the backend used and how the router spread the tokens.
 */
import { ACTIVATIONS, Activation, MoELayer, Tensor, WEIGHT_DTYPES, WeightDtype, backendInfo, layerFlops, setThreads } from '../lib';
import { FlagSpec, median, parseFlags, usage } from '../tools/flags';

const FLAGS: FlagSpec[] = [
  { name: 'tokens', help: 'tokens in the batch', default: 512 },
  { name: 'd-model', help: 'model width', default: 1024 },
  { name: 'd-hidden', help: 'expert hidden width', default: 2816 },
  { name: 'experts', help: 'number of experts', default: 8 },
  { name: 'top-k', help: 'experts per token', default: 2 },
  { name: 'activation', help: ACTIVATIONS.join(' | '), default: 'swiglu' },
  { name: 'dtype', help: `how the expert weights are stored: ${WEIGHT_DTYPES.join(' | ')}`, default: 'float32' },
  { name: 'threads', help: 'threads (0 = all cores)', default: 0 },
  { name: 'repeat', help: 'timed runs after one warm-up', default: 5 },
  { name: 'seed', help: 'seed of the weights and inputs', default: 1 },
  { name: 'async', help: 'use forward() (off the event loop) instead of forwardSync()', default: false },
  { name: 'help', help: 'show this help', default: false },
];

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
  const config = {
    dModel: Number(f['d-model']),
    dHidden: Number(f['d-hidden']),
    numExperts: Number(f.experts),
    topK: Number(f['top-k']),
    activation: String(f.activation) as Activation,
    weightDtype: String(f.dtype) as WeightDtype,
  };
  const tokens = Number(f.tokens);
  const info = backendInfo();
  console.log(`moe-kernels · isa ${info.isa} · ${info.threads} thread${info.threads === 1 ? '' : 's'} · ${info.binary.origin} binary`);
  let t0 = performance.now();
  const layer = MoELayer.random(config, { seed: Number(f.seed) });
  const buildMs = performance.now() - t0;
  console.log(
    `layer: dModel ${config.dModel}, dHidden ${config.dHidden}, ${config.numExperts} experts, top-${config.topK}, ` +
      `${config.activation}, ${config.weightDtype} weights (${(layer.packedBytes / 2 ** 20).toFixed(1)} MiB packed, built in ${(buildMs / 1000).toFixed(2)} s)`,
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
  const flops = layerFlops(config, tokens);
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
