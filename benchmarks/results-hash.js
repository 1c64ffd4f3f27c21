// node benchmarks/results-hash.js [package dir]: a SHA-256 of the results of every router, aux loss and gradient on
// fixed seeds (forward, gateGradients, routerWeightGradient). Run it against two builds (a worktree of the commit
// before a refactor, say) to show that results are bitwise the same.
const path = require('path').resolve(process.argv[2] ?? '.');
const m = require(path);
const crypto = require('crypto');
const h = crypto.createHash('sha256');
const add = (a) => {
  if (a === undefined) return;
  const b = Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  h.update(b);
};
const { MoELayer, Tensor, gating } = m;
const configs = [
  { dModel: 24, dHidden: 40, numExperts: 6, topK: 2 },
  { dModel: 17, dHidden: 9, numExperts: 5, topK: 5, router: { kind: 'topK', capacityFactor: 1.0 } },
  { dModel: 33, dHidden: 21, numExperts: 8, topK: 3, router: { kind: 'noisyTopK', explorationNoise: 0.1, jitter: 0.05, seed: 3 } },
  { dModel: 16, dHidden: 16, numExperts: 4, router: { kind: 'soft' } },
  { dModel: 16, dHidden: 12, numExperts: 8, router: { kind: 'switch', capacityFactor: 1.25 } },
  { dModel: 16, dHidden: 12, numExperts: 8, router: { kind: 'gshardTop2', seed: 5 } },
  { dModel: 16, dHidden: 12, numExperts: 8, router: { kind: 'expertChoice' } },
  {
    dModel: 20,
    dHidden: 12,
    numExperts: 8,
    topK: 2,
    router: { kind: 'sigmoidBias', numGroups: 4, topKGroups: 2, bias: [0.1, 0, 0, 0.2, 0, 0, 0, 0.3] },
    sharedExperts: 1,
  },
];
const aux = ['importance', 'switch', 'gshard', 'mixtral', 'zLoss', { kind: 'sequence', sequenceLength: 1 }];
for (const [ci, c] of configs.entries()) {
  const layer = MoELayer.random(c, { seed: ci, bias: ci % 2 === 1 });
  for (const tokens of [1, 7, 64])
    for (const training of [false, true]) {
      const x = Tensor.randn([tokens, c.dModel], { seed: tokens + ci });
      const losses = c.router?.kind === 'noisyTopK' && training ? [...aux, 'load'] : aux;
      const r = layer.forwardSync(x, { training, auxLosses: losses });
      add(r.output.data);
      add(r.routing.weights);
      add(r.routing.experts);
      add(r.routing.logits.data);
      for (const a of Object.values(r.auxLosses)) {
        h.update(String(a.value));
        add(a.gradLogits);
        add(a.gradNoiseLogits);
      }
      const g = layer.gateGradients(x, r, Tensor.randn([tokens, c.dModel], { seed: 99 }));
      add(g.gradWeights);
      add(g.gradLogits);
      add(g.gradRouter);
      add(g.gradNoiseLogits);
      add(g.gradNoiseRouter);
    }
}
const gl = Tensor.randn([13, 7], { seed: 1 }).data;
add(gating.routerWeightGradient(Float64Array.from(gl), Tensor.randn([13, 29], { seed: 2 })));
add(
  gating.routerWeightGradient(gl, {
    data: Float64Array.from(Tensor.randn([13, 29], { seed: 3 }).data, (v) => v * Math.PI),
    shape: [13, 29],
  }),
);
console.log(h.digest('hex'));
