// node benchmarks/router-gradient-time.js [package dir]: best of 5 of gating.routerWeightGradient at T 512, E 64, dModel
// 1024 (dense gradLogits). Run two builds alternately to compare (benchmarks/NOTES.md row 57).
const m = require(require('path').resolve(process.argv[2] ?? '.'));
const { Tensor, gating } = m;
const T = 512,
  E = 64,
  d = 1024;
const gl = Float64Array.from(Tensor.randn([T, E], { seed: 1 }).data);
const x = Tensor.randn([T, d], { seed: 2 });
const best = (f) => {
  let b = Infinity;
  for (let i = 0; i < 5; i++) {
    const t = process.hrtime.bigint();
    f();
    b = Math.min(b, Number(process.hrtime.bigint() - t) / 1e6);
  }
  return b.toFixed(2);
};
console.log(
  process.argv[2] ?? '.',
  `routerWeightGradient T=${T} E=${E} d=${d} (dense gradLogits) ms`,
  best(() => gating.routerWeightGradient(gl, x)),
);
