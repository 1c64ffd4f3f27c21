/**
 * A training step's parts side by side (issue 19): forward, backward and an AdamW step of one layer, medians of
 * interleaved repetitions in one process.
 * A training loop's calls: forward with training (keeping the pre-activations unless --recompute), backward into the
 * previous step's gradients, AdamW.
 *   node dist/benchmarks/train-step.js [--shape small|fine-grained] [--tokens 512] [--repeat 5] [--recompute]
 */
import { LayerGradients, MoELayer, Tensor } from '../lib';
import { FlagSpec, median, parseFlags, usage } from '../tools/flags';
import { SHAPES } from './shapes';

const FLAGS: FlagSpec[] = [
  { name: 'shape', help: SHAPES.map((s) => s.name).join(' | '), default: 'small' },
  { name: 'tokens', help: 'tokens per step', default: 512 },
  { name: 'repeat', help: 'timed repetitions', default: 5 },
  { name: 'recompute', help: 'the backward recomputes the pre-activations (the forward keeps nothing)', default: false },
  { name: 'help', help: 'show this help', default: false },
];

const f = parseFlags(process.argv.slice(2), FLAGS);
if (f.help) {
  process.stdout.write(usage('node dist/benchmarks/train-step.js [flags]', FLAGS));
} else {
  const shape = SHAPES.find((s) => s.name === String(f.shape));
  if (!shape) throw new Error(`unknown --shape ${f.shape}`);
  const tokens = Number(f.tokens);
  const { dModel, dHidden, numExperts, topK } = shape;
  const layer = MoELayer.random({ dModel, dHidden, numExperts, topK }, { seed: 1 });
  const x = Tensor.randn([tokens, shape.dModel], { seed: 2 });
  const g = Tensor.randn([tokens, shape.dModel], { seed: 3, std: 1e-3 });
  const times = { forward: [] as number[], backward: [] as number[], step: [] as number[] };
  let grads: LayerGradients | undefined;
  for (let i = 0; i <= Number(f.repeat); i++) {
    const t0 = performance.now();
    const r = layer.forwardSync(x, { training: true, recompute: Boolean(f.recompute) });
    const t1 = performance.now();
    grads = layer.backward(x, r, g, grads ? { into: grads } : {});
    const t2 = performance.now();
    layer.step(grads, { kind: 'adamw', lr: 1e-4 });
    const t3 = performance.now();
    if (i === 0) continue; // warm-up
    times.forward.push(t1 - t0);
    times.backward.push(t2 - t1);
    times.step.push(t3 - t2);
  }
  const fwd = median(times.forward);
  const bwd = median(times.backward);
  const stp = median(times.step);
  console.log(
    `${String(f.shape)} (${shape.dModel}/${shape.dHidden}/${shape.numExperts}, top-${shape.topK}), ${tokens} tokens, medians of ${f.repeat}:`,
  );
  console.log(
    `forward ${fwd.toFixed(1)} ms · backward ${bwd.toFixed(1)} ms (${(bwd / fwd).toFixed(2)}x the forward) · AdamW step ${stp.toFixed(1)} ms`,
  );
  console.log(`training step ${(fwd + bwd + stp).toFixed(1)} ms = ${Math.round((tokens / (fwd + bwd + stp)) * 1000)} tokens/s`);
  layer.dispose();
}
