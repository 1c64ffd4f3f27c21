/**
 * The layer's gradient paths for training the gate: forward(x, { training, auxLosses }) then gateGradients,
 * checked by central finite differences of a float64 reference of the same computation (choices and noise fixed).
 */
import { MoELayer, MoEWeights, RouterConfig, Tensor, gating } from '../../lib';
import { AuxLossSpec, referenceAuxLosses, resolveAuxLosses } from '../../lib/aux-losses';
import { referenceExperts } from '../../lib/reference';
import { Case, randomWeights } from '../helpers';

const c: Case = { tokens: 7, dModel: 6, dHidden: 5, numExperts: 4, topK: 2, activation: 'swiglu', bias: true };

function logitsOf(x: ArrayLike<number>, w: ArrayLike<number>): Float64Array {
  const out = new Float64Array(c.tokens * c.numExperts);
  for (let t = 0; t < c.tokens; t++)
    for (let e = 0; e < c.numExperts; e++)
      for (let i = 0; i < c.dModel; i++) out[t * c.numExperts + e] += x[t * c.dModel + i] * w[e * c.dModel + i];
  return out;
}

function run(
  router: RouterConfig,
  auxLosses: AuxLossSpec[],
  route: (l: Float64Array, noiseLogits: Float64Array, gate0?: gating.GateResult) => gating.GateResult,
) {
  const w: MoEWeights = randomWeights(c, 3);
  w.router = Tensor.randn([c.numExperts, c.dModel], { seed: 4, std: 0.8 });
  if (router.kind === 'noisyTopK') w.noiseRouter = Tensor.randn([c.numExperts, c.dModel], { seed: 5, std: 0.5 });
  const layer = new MoELayer({ ...c, topK: router.kind === 'switch' ? undefined : c.topK, router }, w);
  const x = Tensor.randn([c.tokens, c.dModel], { seed: 6 });
  const gradOutput = Tensor.randn([c.tokens, c.dModel], { seed: 7 });
  const result = layer.forwardSync(x, { training: true, auxLosses });
  const grads = layer.gateGradients(x, result, gradOutput);
  const gate0 = result.routing.gate ?? gating.topK({ data: result.routing.logits.data, shape: [c.tokens, c.numExperts] }, { k: c.topK });

  const ref = { router: w.router.data, w1: w.w1.data, w3: w.w3!.data, w2: w.w2.data, b1: w.b1!.data, b3: w.b3!.data, b2: w.b2!.data };
  const loss = (wg: Float64Array, wn: Float64Array) => {
    const gate = route(logitsOf(x.data, wg), logitsOf(x.data, wn), gate0);
    expect(Array.from(gate.experts)).toEqual(Array.from(gate0.experts));
    const y = referenceExperts(x.data, c.tokens, ref as never, { ...c, normalizeTopK: true }, gate.topK, gate.experts, gate.weights);
    let l = y.reduce((s, v, i) => s + v * gradOutput.data[i], 0);
    const ranked = gate.kind === 'noisyTopK' ? (gate as gating.NoisyTopKGate).clean : logitsOf(x.data, wg);
    const specs = resolveAuxLosses(auxLosses, {
      router: router.kind,
      training: true,
      tokens: c.tokens,
      numExperts: c.numExperts,
      topK: gate.topK,
    });
    for (const a of Object.values(referenceAuxLosses(specs, gate, ranked))) l += a!.value;
    return l;
  };
  const wg = Float64Array.from(w.router.data);
  const wn = Float64Array.from(w.noiseRouter?.data ?? new Float32Array(wg.length));
  const check = (which: 'router' | 'noise', analytic: Float64Array) => {
    const h = 1e-5;
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < wg.length; i++) {
      const [p, q] = [which === 'router' ? wg.slice() : wn.slice(), which === 'router' ? wg.slice() : wn.slice()];
      p[i] += h;
      q[i] -= h;
      const fd = which === 'router' ? (loss(p, wn) - loss(q, wn)) / (2 * h) : (loss(wg, p) - loss(wg, q)) / (2 * h);
      diff = Math.max(diff, Math.abs(fd - analytic[i]));
      scale = Math.max(scale, Math.abs(analytic[i]));
    }
    expect(scale).toBeGreaterThan(0);
    return diff / scale;
  };
  return { result, grads, check };
}

describe('training the gate through the layer', () => {
  it('default router (native path) with the switch loss and z-loss', () => {
    const { result, grads, check } = run({ kind: 'topK' }, ['switch', 'zLoss', 'mixtral'], (l) =>
      gating.topK({ data: l, shape: [c.tokens, c.numExperts] }, { k: c.topK }),
    );
    expect(Object.keys(result.auxLosses!)).toEqual(['switch', 'zLoss', 'mixtral']);
    expect(grads.gradWeights!.length).toBe(c.tokens * c.topK);
    expect(check('router', grads.gradRouter)).toBeLessThan(1e-4);
  });

  it('noisy top-k with the importance and load losses: dW_g and dW_noise, noise held fixed', () => {
    const spec = [
      { kind: 'importance' as const, coefficient: 0.1 },
      { kind: 'load' as const, coefficient: 0.1 },
    ];
    let noise: gating.Matrix | undefined;
    const { result, grads, check } = run({ kind: 'noisyTopK', seed: 11 }, spec, (l, n) =>
      gating.noisyTopK(
        { data: l, shape: [c.tokens, c.numExperts] },
        { data: n, shape: [c.tokens, c.numExperts] },
        { k: c.topK, training: true, noise },
      ),
    );
    noise = { data: (result.routing.gate as gating.NoisyTopKGate).noise, shape: [c.tokens, c.numExperts] };
    expect(result.auxLosses!.load!.value).toBeGreaterThan(0);
    expect(check('router', grads.gradRouter)).toBeLessThan(1e-4);
    expect(check('noise', grads.gradNoiseRouter!)).toBeLessThan(1e-4);
  });

  it('DeepSeek-V3 sigmoid + bias with the sequence-wise loss', () => {
    const router: RouterConfig = { kind: 'sigmoidBias', numGroups: 2, topKGroups: 1, routeScale: 2.5, bias: [0.1, 0, 0, 0.2] };
    const { grads, check } = run(router, [{ kind: 'sequence', sequenceLength: 7, alpha: 0.01 }], (l) =>
      gating.sigmoidBias(
        { data: l, shape: [c.tokens, c.numExperts] },
        { k: c.topK, numGroups: 2, topKGroups: 1, routeScale: 2.5, bias: [0.1, 0, 0, 0.2] },
      ),
    );
    expect(check('router', grads.gradRouter)).toBeLessThan(1e-4);
  });

  it('GShard top-2 and switch routing with capacity', () => {
    const g = run({ kind: 'gshardTop2', capacityFactor: 1, seed: 2 }, ['gshard'], (l, _n, gate0) => {
      // hold the random-routing and capacity decisions of the forward fixed
      const r = gating.gshardTop2({ data: l, shape: [c.tokens, c.numExperts] }, { capacityFactor: 1, randomRouting: false });
      gate0!.experts.forEach((e, s) => {
        if (e < 0) {
          r.experts[s] = -1;
          r.weights[s] = 0;
        }
      });
      return r;
    });
    expect(g.check('router', g.grads.gradRouter)).toBeLessThan(1e-4);
    const s = run({ kind: 'switch', capacityFactor: 1.5 }, ['switch'], (l) =>
      gating.switchTop1({ data: l, shape: [c.tokens, c.numExperts] }, { capacityFactor: 1.5 }),
    );
    expect(s.check('router', s.grads.gradRouter)).toBeLessThan(1e-4);
  });
});
