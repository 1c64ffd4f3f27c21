/**
 * A training step of one layer (issue 19): forward with `training` (keeping the pre-activations unless
 * --recompute), backward as users write it (the plain call: into the layer's own gradients, those of the step
 * before), AdamW; medians of repetitions. Each repetition also times a backward asked for fresh arrays
 * (`{ fresh: true }`: what every plain backward cost before the layer kept its gradients). Then, in the same run,
 * PyTorch autograd on the same layer, weights and inputs (benchmarks/peers/torch_train_step.py: the Hugging Face-style
 * loop, float32, torch.optim.AdamW), whose first step's gradients are checked against ours.
 *   node dist/benchmarks/train-step.js [--shape small|fine-grained] [--tokens 512] [--repeat 5] [--recompute] [--no-peer]
 * Writes benchmarks/results/<machine kind>/train-step.json.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { LayerGradients, MoELayer, Tensor, backendInfo } from '../lib';
import { FlagSpec, median, parseFlags, usage } from '../tools/flags';
import { machineKind } from './history';
import { torchUnavailable } from './peers/torch';
import { SHAPES } from './shapes';

const FLAGS: FlagSpec[] = [
  { name: 'shape', help: SHAPES.map((s) => s.name).join(' | '), default: 'small' },
  { name: 'tokens', help: 'tokens per step', default: 512 },
  { name: 'repeat', help: 'timed repetitions', default: 5 },
  { name: 'threads', help: 'threads (0: all cores)', default: 0 },
  { name: 'recompute', help: 'the backward recomputes the pre-activations (the forward keeps nothing)', default: false },
  { name: 'no-peer', help: 'skip PyTorch', default: false },
  { name: 'help', help: 'show this help', default: false },
];

interface Phases {
  forward: number;
  backward: number;
  step: number;
}
const total = (p: Phases) => p.forward + p.backward + p.step;

const f = parseFlags(process.argv.slice(2), FLAGS);
if (f.help) {
  process.stdout.write(usage('node dist/benchmarks/train-step.js [flags]', FLAGS));
} else {
  const shape = SHAPES.find((s) => s.name === String(f.shape));
  if (!shape) throw new Error(`unknown --shape ${f.shape}`);
  const tokens = Number(f.tokens);
  const reps = Number(f.repeat);
  const threads = Number(f.threads) || os.availableParallelism();
  const { dModel, dHidden, numExperts, topK } = shape;
  const layer = MoELayer.random({ dModel, dHidden, numExperts, topK, threads }, { seed: 1 });
  const initial = layer.exportWeights(); // before any step: the peer starts from these
  const x = Tensor.randn([tokens, dModel], { seed: 2 });
  const g = Tensor.randn([tokens, dModel], { seed: 3, std: 1e-3 });

  // Ours: a training loop's calls.
  const times = { forward: [] as number[], backward: [] as number[], step: [] as number[], fresh: [] as number[] };
  let grads: LayerGradients | undefined;
  let first: Record<string, Float32Array> | undefined;
  for (let i = 0; i <= reps; i++) {
    const t0 = performance.now();
    const r = layer.forwardSync(x, { training: true, recompute: Boolean(f.recompute) });
    const t1 = performance.now();
    grads = layer.backward(x, r, g);
    const t2 = performance.now();
    if (i === 0)
      first = Object.fromEntries(
        (['router', 'w1', 'w3', 'w2', 'dx'] as const).map((k) => [k, Float32Array.from(grads![k]!.data as Float32Array)]),
      );
    layer.step(grads, { kind: 'adamw', lr: 1e-4 });
    const t3 = performance.now();
    const t4 = performance.now();
    layer.backward(x, layer.forwardSync(x, { training: true, recompute: Boolean(f.recompute) }), g, { fresh: true });
    const t5 = performance.now();
    if (i === 0) continue; // warm-up
    times.fresh.push(t5 - t4 - (t1 - t0)); // less a forward's time
    times.forward.push(t1 - t0);
    times.backward.push(t2 - t1);
    times.step.push(t3 - t2);
  }
  layer.dispose();
  const ours: Phases = { forward: median(times.forward), backward: median(times.backward), step: median(times.step) };
  const title = `${shape.name} (${dModel}/${dHidden}/${numExperts}, top-${topK}), ${tokens} tokens, ${threads} threads, medians of ${reps}`;
  console.log(title);
  const row = (name: string, p: Phases) =>
    console.log(
      `${name.padEnd(22)} forward ${p.forward.toFixed(1).padStart(6)} ms · backward ${p.backward.toFixed(1).padStart(6)} ms ` +
        `(${(p.backward / p.forward).toFixed(2)}x) · AdamW ${p.step.toFixed(1).padStart(6)} ms · step ${total(p).toFixed(1).padStart(6)} ms ` +
        `= ${Math.round((tokens / total(p)) * 1000)} tokens/s`,
    );
  row(`moe-kernels (${backendInfo().isa})`, ours);
  const fresh = median(times.fresh);
  console.log(
    `${''.padEnd(22)} a backward with { fresh: true } (new gradient arrays): ${fresh.toFixed(1)} ms (${(fresh / ours.forward).toFixed(2)}x)`,
  );

  // PyTorch autograd on the same layer.
  let torch: (Phases & { version: string; gradientError: Record<string, number> }) | undefined;
  const unavailable = f['no-peer'] ? 'skipped (--no-peer)' : torchUnavailable();
  if (unavailable) console.log(`PyTorch: ${unavailable}`);
  else {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-train-step-'));
    try {
      const save = (name: string, t: Tensor) => fs.writeFileSync(path.join(dir, `${name}.f32`), t.data as Float32Array);
      save('router', initial.router);
      save('w1', initial.w1);
      save('w3', initial.w3!);
      save('w2', initial.w2);
      save('x', x);
      save('g', g);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000); // let our idle workers settle first
      const script = path.join(__dirname, '..', '..', 'benchmarks', 'peers', 'torch_train_step.py');
      const args = [script, dir, dModel, dHidden, numExperts, topK, tokens, threads, reps].map(String);
      const env = { ...process.env, OMP_NUM_THREADS: String(threads), OMP_WAIT_POLICY: 'PASSIVE', GOMP_SPINCOUNT: '0' };
      const run = spawnSync('/usr/bin/python3', args, { encoding: 'utf8', env, maxBuffer: 1 << 20 });
      if (run.status !== 0) throw new Error(`torch_train_step.py failed: ${run.stderr}`);
      const out = JSON.parse(run.stdout.trim().split('\n').pop()!);
      const gradientError: Record<string, number> = {};
      for (const [name, ours] of Object.entries(first!)) {
        const theirs = new Float32Array(fs.readFileSync(path.join(dir, `grad_${name === 'dx' ? 'x' : name}.f32`)).buffer.slice(0));
        let num = 0;
        let den = 0;
        for (let i = 0; i < ours.length; i++) {
          num += (ours[i] - theirs[i]) ** 2;
          den += theirs[i] ** 2;
        }
        gradientError[name] = Math.sqrt(num / Math.max(den, 1e-300));
      }
      torch = {
        forward: median(out.forward_ms),
        backward: median(out.backward_ms),
        step: median(out.step_ms),
        version: out.torch,
        gradientError,
      };
      row(`PyTorch ${out.torch}`, torch);
      console.log(
        `per training step: moe-kernels ${(total(torch) / total(ours)).toFixed(2)}x faster than PyTorch autograd ` +
          `(forward ${(torch.forward / ours.forward).toFixed(2)}x, backward ${(torch.backward / ours.backward).toFixed(2)}x, ` +
          `AdamW ${(torch.step / ours.step).toFixed(2)}x)`,
      );
      console.log(
        `first step's gradients against PyTorch's (relative L2): ${Object.entries(gradientError)
          .map(([k, v]) => `${k} ${v.toExponential(1)}`)
          .join(', ')}`,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  const results = path.join(__dirname, '..', '..', 'benchmarks', 'results', machineKind(backendInfo().isa));
  fs.mkdirSync(results, { recursive: true });
  const file = path.join(results, 'train-step.json');
  fs.writeFileSync(
    file,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        shape,
        tokens,
        threads,
        reps,
        recompute: Boolean(f.recompute),
        isa: backendInfo().isa,
        ours,
        freshBackwardMs: fresh,
        torch,
      },
      null,
      2,
    ) + '\n',
  );
  console.log(`results: ${path.relative(process.cwd(), file)}`);
}
