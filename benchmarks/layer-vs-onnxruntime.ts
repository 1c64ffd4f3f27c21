/**
 * moe-kernels against onnxruntime-node's com.microsoft.MoE on the same weights and inputs, in one run,
 * alternating implementations every repetition to cancel drift. Prints a table and writes JSON to
 * benchmarks/results/. Usage: npm run bench -- [--tokens 1,512] [--threads 2] [--repeat 7]
 */
import * as fs from 'fs';
import * as path from 'path';
import { MoELayer, MoEWeights, Tensor, activeWeightBytes, backendInfo, layerFlops, setThreads } from '../lib';
import { Random } from '../lib/random';
import { FlagSpec, median, parseFlags, usage } from '../cli/args';
import { createOrtMoE } from './onnx-moe';

const FLAGS: FlagSpec[] = [
  { name: 'tokens', help: 'comma-separated batch sizes', default: '1,512' },
  { name: 'threads', help: 'threads for every implementation', default: 2 },
  { name: 'repeat', help: 'timed repetitions per implementation', default: 7 },
  { name: 'd-model', help: 'model width', default: 1024 },
  { name: 'd-hidden', help: 'expert hidden width', default: 2816 },
  { name: 'experts', help: 'number of experts', default: 8 },
  { name: 'top-k', help: 'experts per token', default: 2 },
  { name: 'ort-spinning', help: "let onnxruntime's idle workers spin (steals cores from the others)", default: false },
  { name: 'help', help: 'show this help', default: false },
];

interface Row {
  implementation: string;
  tokens: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
  gflops: number;
  activeGBps: number;
}

function randomWeights(config: { dModel: number; dHidden: number; numExperts: number }, seed: number): MoEWeights {
  const rng = new Random(seed);
  const s = () => rng.nextUint32();
  const { dModel: d, dHidden: h, numExperts: e } = config;
  return {
    router: Tensor.randn([e, d], { seed: s(), std: 1 / Math.sqrt(d) }),
    w1: Tensor.randn([e, h, d], { seed: s(), std: 1 / Math.sqrt(d) }),
    w3: Tensor.randn([e, h, d], { seed: s(), std: 1 / Math.sqrt(d) }),
    w2: Tensor.randn([e, d, h], { seed: s(), std: 1 / Math.sqrt(h) }),
  };
}

async function main(): Promise<void> {
  const f = parseFlags(process.argv.slice(2), FLAGS);
  if (f.help) {
    process.stdout.write(usage('npm run bench -- [flags]   moe-kernels vs onnxruntime MoE, side by side', FLAGS));
    return;
  }
  const threads = Number(f.threads);
  setThreads(threads);
  const config = {
    dModel: Number(f['d-model']), dHidden: Number(f['d-hidden']), numExperts: Number(f.experts), topK: Number(f['top-k']),
  };
  const weights = randomWeights(config, 1);
  const layer = new MoELayer(config, weights);
  const ort = await createOrtMoE(config, weights, threads, Boolean(f['ort-spinning']));
  const info = backendInfo();
  console.log(`moe-kernels isa ${info.isa}, ${threads} threads; shape ${JSON.stringify(config)}, fp32`);
  if (typeof ort === 'string') console.log(`onnxruntime skipped: ${ort}`);

  const rows: Row[] = [];
  for (const tokens of String(f.tokens).split(',').map(Number)) {
    const x = Tensor.randn([tokens, config.dModel], { seed: 2 + tokens });
    const impls: Array<[string, () => Promise<unknown>]> = [
      ['moe-kernels sync', async () => layer.forwardSync(x)],
      ['moe-kernels async', () => layer.forward(x)],
    ];
    if (typeof ort !== 'string') {
      impls.push(['onnxruntime MoE', () => ort.run(x.data, tokens)]);
      // Same weights, same input: the answers must agree before the times mean anything.
      const ours = layer.forwardSync(x).output.data;
      const theirs = await ort.run(x.data, tokens);
      let diff = 0;
      let scale = 0;
      for (let i = 0; i < ours.length; i++) {
        diff = Math.max(diff, Math.abs(ours[i] - theirs[i]));
        scale = Math.max(scale, Math.abs(theirs[i]));
      }
      console.log(`T=${tokens}: max |moe-kernels - onnxruntime| / max |onnxruntime| = ${(diff / scale).toExponential(2)}`);
    }
    const times = impls.map(() => [] as number[]);
    for (const [, fn] of impls) await fn(); // warm-up
    for (let r = 0; r < Number(f.repeat); r++)
      for (let i = 0; i < impls.length; i++) {
        const t0 = performance.now();
        await impls[i][1]();
        times[i].push(performance.now() - t0);
      }
    const experts = new Set(layer.forwardSync(x).routing.experts).size;
    impls.forEach(([name], i) => {
      const ms = median(times[i]);
      rows.push({
        implementation: name, tokens, medianMs: ms, minMs: Math.min(...times[i]), maxMs: Math.max(...times[i]),
        gflops: layerFlops(config, tokens) / ms / 1e6,
        activeGBps: activeWeightBytes(config, experts) / ms / 1e6,
      });
    });
  }

  const ortMs = (tokens: number) => rows.find((r) => r.tokens === tokens && r.implementation === 'onnxruntime MoE')?.medianMs;
  console.log('\n| implementation | tokens | median ms | min-max ms | GFLOP/s | GB/s (active weights) | speed vs onnxruntime |');
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const o = ortMs(r.tokens);
    console.log(
      `| ${r.implementation} | ${r.tokens} | ${r.medianMs.toFixed(2)} | ${r.minMs.toFixed(2)}-${r.maxMs.toFixed(2)} | ` +
        `${r.gflops.toFixed(1)} | ${r.activeGBps.toFixed(1)} | ${o ? (o / r.medianMs).toFixed(2) + 'x' : '-'} |`,
    );
  }
  const dir = path.join(__dirname, '..', '..', 'benchmarks', 'results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `layer-vs-onnxruntime-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), isa: info.isa, threads, config, rows }, null, 2));
  console.log(`\nwrote ${path.relative(process.cwd(), file)}`);
  layer.dispose();
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
