/**
 * The cost of small batches (issue 30): a forward of 1 to 64 tokens, per weight dtype, as a server would run it
 * (`forwardSync` with `out`, routing by the router, inputs cycled so the experts' weights come from memory). Each
 * expert's weights are read once for all the tokens routed to it, so the time follows the number of distinct experts
 * the batch selects, not the tokens. Reports the experts' bytes per forward as stored, their rate against the read
 * ceiling measured between the blocks (the same minutes), and tokens per second.
 *   node dist/benchmarks/decode-curve.js [--shape qwen3-30b-a3b] [--dtypes float32,bfloat16,int8,int4]
 *     [--tokens 1,2,4,8,16,32,64] [--threads 2] [--repeat 7]
 */
import { MoELayer, MoEWeights, ReadProbe, Tensor, WeightDtype, setThreads } from '../lib';
import { Random } from '../lib/random';
import { FlagSpec, median, parseFlags, usage } from '../tools/flags';
import { SHAPES } from './shapes';

const FLAGS: FlagSpec[] = [
  { name: 'shape', help: SHAPES.map((s) => s.name).join(' | '), default: 'qwen3-30b-a3b' },
  { name: 'dtypes', help: 'comma-separated weight dtypes', default: 'float32,bfloat16,int8,int4' },
  { name: 'tokens', help: 'comma-separated batch sizes', default: '1,2,4,8,16,32,64' },
  { name: 'threads', help: 'threads', default: 2 },
  { name: 'repeat', help: 'timed blocks per batch size (alternating with the read probe)', default: 7 },
  { name: 'help', help: 'show this help', default: false },
];
// Distinct inputs cycled per batch size: consecutive forwards select other experts (as the other layers of a model
// would evict them), and each block lasts about BLOCK_MS.
const INPUTS = 16;
const BLOCK_MS = 30;

const f = parseFlags(process.argv.slice(2), FLAGS);
if (f.help) {
  process.stdout.write(usage('node dist/benchmarks/decode-curve.js [flags]', FLAGS));
} else {
  const shape = SHAPES.find((s) => s.name === String(f.shape));
  if (!shape) throw new Error(`unknown --shape ${f.shape}`);
  const threads = Number(f.threads);
  setThreads(threads);
  const { dModel, dHidden, numExperts, topK } = shape;
  const config = { dModel, dHidden, numExperts, topK };
  const rng = new Random(1);
  const seed = () => rng.nextUint32();
  const weights: MoEWeights = {
    router: Tensor.randn([numExperts, dModel], { seed: seed(), std: 1 / Math.sqrt(dModel) }),
    w1: Tensor.randn([numExperts, dHidden, dModel], { seed: seed(), std: 1 / Math.sqrt(dModel) }),
    w3: Tensor.randn([numExperts, dHidden, dModel], { seed: seed(), std: 1 / Math.sqrt(dModel) }),
    w2: Tensor.randn([numExperts, dModel, dHidden], { seed: seed(), std: 1 / Math.sqrt(dHidden) }),
  };
  const probe = new ReadProbe(256 * 2 ** 20);
  console.log(
    `${shape.name} (${dModel}/${dHidden}, ${numExperts} experts, top-${topK}), ${threads} threads, medians of ${f.repeat} blocks`,
  );
  console.log('\n| dtype | tokens | ms / forward | experts read | MB read | GB/s | % of read ceiling | tokens/s |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const dtype of String(f.dtypes).split(',') as WeightDtype[]) {
    const layer = new MoELayer({ ...config, weightDtype: dtype }, weights);
    // The experts' bytes as stored (the router's float32 matrix excluded), per expert.
    const perExpert = (layer.packedBytes - numExperts * dModel * 4) / numExperts;
    for (const tokens of String(f.tokens).split(',').map(Number)) {
      const xs = Array.from({ length: INPUTS }, (_, i) => Tensor.randn([tokens, dModel], { seed: 1000 * tokens + i }));
      const out = Tensor.zeros([tokens, dModel]);
      const active = xs.map((x) => layer.forwardSync(x, { out }).routing.tokensPerExpert.filter((n) => n > 0).length);
      const t0 = performance.now();
      for (let i = 0; i < INPUTS; i++) layer.forwardSync(xs[i], { out });
      const calls = Math.max(INPUTS, Math.ceil(BLOCK_MS / ((performance.now() - t0) / INPUTS)));
      const times: number[] = [];
      const ceilings: number[] = [];
      for (let r = 0; r < Number(f.repeat); r++) {
        const start = performance.now();
        for (let c = 0; c < calls; c++) layer.forwardSync(xs[c % INPUTS], { out });
        times.push((performance.now() - start) / calls);
        ceilings.push(probe.measure(threads, 2));
      }
      const ms = median(times);
      const experts = active.reduce((a, b) => a + b, 0) / active.length;
      const gbps = (experts * perExpert) / ms / 1e6;
      console.log(
        `| ${dtype} | ${tokens} | ${ms.toFixed(3)} | ${experts.toFixed(1)} | ${((experts * perExpert) / 1e6).toFixed(1)} | ` +
          `${gbps.toFixed(1)} | ${((100 * gbps) / median(ceilings)).toFixed(0)}% of ${median(ceilings).toFixed(0)} | ` +
          `${Math.round((tokens * 1000) / ms)} |`,
      );
    }
    layer.dispose();
  }
  probe.dispose();
}
