/**
 * A forward per routing rule (and a training step for two of them), so that where the routing runs can be compared:
 * the small shape (dModel 1024, dHidden 2816, 8 experts) at 1 and 128 tokens and the fine-grained one (dModel 2048,
 * dHidden 768, 128 experts, top-8) at 1 token, float32 weights, sync and async, median milliseconds per call.
 *   node dist/benchmarks/routing-rules.js [--reps 40]
 * It uses only the public API, so the compiled file runs against another checkout's dist/ too: copy it to that
 * checkout's dist/benchmarks/ and alternate the two (benchmarks/NOTES.md row 92).
 */
import { MoELayer, RouterConfig, Tensor, setThreads } from '../lib';
import { parseFlags } from '../tools/flags';

const f = parseFlags(process.argv.slice(2), [{ name: 'reps', help: 'timed calls per row', default: 40 }]);
const reps = Number(f.reps);

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

async function time(fn: () => unknown): Promise<number> {
  for (let i = 0; i < Math.max(3, reps / 5); i++) await fn();
  const ms: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = process.hrtime.bigint();
    await fn();
    ms.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return median(ms);
}

interface Row {
  shape: string;
  rule: string;
  tokens: number;
  sync: number;
  async: number;
}

async function main(): Promise<void> {
  setThreads(2);
  const small = { dModel: 1024, dHidden: 2816, numExperts: 8 };
  const fine = { dModel: 2048, dHidden: 768, numExperts: 128 };
  const rules: [string, RouterConfig, number | undefined][] = [
    ['topK (fused)', { kind: 'topK' }, 2],
    ['topK + exploration (training)', { kind: 'topK', explorationNoise: 0.1 }, 2],
    ['switch', { kind: 'switch' }, undefined],
    ['noisyTopK', { kind: 'noisyTopK' }, 2],
    ['gshardTop2', { kind: 'gshardTop2' }, undefined],
    ['expertChoice', { kind: 'expertChoice' }, undefined],
    ['sigmoidBias', { kind: 'sigmoidBias', numGroups: 4, topKGroups: 2 }, 2],
  ];
  const rows: Row[] = [];
  for (const [shapeName, shape, tokenCounts, ruleSet] of [
    ['small', small, [1, 128], rules],
    [
      'fine',
      fine,
      [1],
      rules
        .filter(([name]) => !name.startsWith('expertChoice'))
        .map(([n, r]) => [n, r, r.kind === 'switch' || r.kind === 'gshardTop2' ? undefined : 8] as const),
    ],
  ] as const) {
    for (const [name, router, topK] of ruleSet) {
      using layer = MoELayer.random({ ...shape, topK, router }, { seed: 1 });
      const training = name.includes('training');
      for (const tokens of tokenCounts) {
        const x = Tensor.randn([tokens, shape.dModel], { seed: 2 });
        const sync = await time(() => layer.forwardSync(x, { training }));
        const async = await time(() => layer.forward(x, { training }));
        rows.push({ shape: shapeName, rule: name, tokens, sync, async });
      }
    }
  }
  // A training step's forward and backward with a rule that routed in TypeScript before issue 29.
  for (const router of [{ kind: 'switch' }, { kind: 'noisyTopK' }] as RouterConfig[]) {
    using layer = MoELayer.random({ ...small, topK: router.kind === 'switch' ? undefined : 2, router }, { seed: 1 });
    const x = Tensor.randn([128, small.dModel], { seed: 2 });
    const g = Tensor.randn([128, small.dModel], { seed: 3 });
    const ms = await time(() => {
      const r = layer.forwardSync(x, { training: true, auxLosses: ['zLoss'] });
      layer.backward(x, r, g); // into the layer's own gradients
    });
    rows.push({ shape: 'small', rule: `${router.kind} forward + backward (training)`, tokens: 128, sync: ms, async: NaN });
  }
  console.log('shape  tokens  sync ms  async ms  rule');
  for (const r of rows)
    console.log(
      `${r.shape.padEnd(6)} ${String(r.tokens).padStart(6)} ${r.sync.toFixed(3).padStart(8)} ${(Number.isNaN(r.async) ? '' : r.async.toFixed(3)).padStart(9)}  ${r.rule}`,
    );
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
