/**
 * layer.step (SGD with momentum, AdamW) updates the packed weights in place with PyTorch's formulas, the state kept
 * in the core; clipGradNorm; and a small training run: a student layer learns a teacher's function, bitwise the
 * same with one thread or two.
 */
import { MoELayer, Tensor, clipGradNorm } from '../lib';
import type { LayerGradients, OptimizerConfig } from '../lib';
import { resolveOptimizer, stepInPlace, parameterTensors } from '../lib/optimizer';
import { Case, expectError, randomWeights, relativeError } from './helpers';

const c: Case = { tokens: 12, dModel: 10, dHidden: 14, numExperts: 4, topK: 2, activation: 'swiglu', bias: true };

function gradsOf(layer: MoELayer, seed: number): LayerGradients {
  const x = Tensor.randn([c.tokens, c.dModel], { seed });
  const g = Tensor.randn([c.tokens, c.dModel], { seed: seed + 1 });
  return layer.backward(x, layer.forwardSync(x), g);
}

test.each([
  { kind: 'sgd', lr: 0.1, momentum: 0.9, weightDecay: 0.01 },
  { kind: 'adamw', lr: 0.01, weightDecay: 0.1 },
] as OptimizerConfig[])('%o: three steps match the formulas on the exported weights', (optimizer) => {
  const w = randomWeights(c, 1);
  const routerBias = Tensor.randn([c.numExperts], { seed: 2 });
  const layer = new MoELayer(c, { ...w, routerBias });
  const o = resolveOptimizer(optimizer);
  const expected = layer.exportWeights();
  const keys = ['router', 'routerBias', 'w1', 'w3', 'w2', 'b1', 'b3', 'b2'] as const;
  const state = Object.fromEntries(keys.map((k) => [k, [new Float32Array(expected[k]!.size), new Float32Array(expected[k]!.size)]]));
  for (let step = 1; step <= 3; step++) {
    const grads = gradsOf(layer, 10 * step);
    layer.step(grads, optimizer);
    for (const k of keys) stepInPlace(expected[k]!.data as Float32Array, grads[k]!.data, state[k][0], state[k][1], o, step);
  }
  const got = layer.exportWeights();
  for (const k of keys) expect([k, relativeError(got[k]!.data, expected[k]!.data) < 1e-6]).toEqual([k, true]);
  layer.dispose();
});

test('clipGradNorm scales every parameter gradient to the norm asked for and returns the norm before', () => {
  const layer = new MoELayer(c, randomWeights(c, 3));
  const grads = gradsOf(layer, 4);
  const norm = Math.sqrt(parameterTensors(grads).reduce((s, { tensor: t }) => s + t.data.reduce((a, v) => a + v * v, 0), 0));
  const dx = Float32Array.from(grads.dx.data);
  expect(clipGradNorm(grads, norm * 10)).toBeCloseTo(norm, 3); // above: unchanged
  expect(clipGradNorm(grads, norm / 4)).toBeCloseTo(norm, 3);
  const after = Math.sqrt(parameterTensors(grads).reduce((s, { tensor: t }) => s + t.data.reduce((a, v) => a + v * v, 0), 0));
  expect(after).toBeCloseTo(norm / 4, 3);
  expect(grads.dx.data).toEqual(dx); // the input's gradient is not a parameter's
  expectError(() => clipGradNorm(grads, 0), 'RangeError', /maxNorm/);
  layer.dispose();
});

test('a student layer learns a teacher layer (AdamW), bitwise the same on one thread and two', () => {
  const teacher = MoELayer.random(c, { seed: 5, bias: true });
  const students = [1, 0].map((threads) => MoELayer.random({ ...c, threads }, { seed: 6, bias: true }));
  const losses: number[][] = [[], []];
  for (let step = 0; step < 60; step++) {
    const x = Tensor.randn([32, c.dModel], { seed: 1000 + step });
    const y = teacher.forwardSync(x).output;
    students.forEach((s, i) => {
      const r = s.forwardSync(x);
      const diff = Float32Array.from(r.output.data, (v, j) => v - y.data[j]);
      losses[i].push(diff.reduce((a, v) => a + v * v, 0) / diff.length);
      const g = Tensor.from(
        Float32Array.from(diff, (v) => (2 * v) / diff.length),
        [32, c.dModel],
      );
      const grads = s.backward(x, r, g);
      clipGradNorm(grads, 1);
      s.step(grads, { kind: 'adamw', lr: 0.01, weightDecay: 0 });
    });
  }
  expect(losses[0]).toEqual(losses[1]);
  const first = losses[0].slice(0, 5).reduce((a, b) => a + b) / 5;
  const last = losses[0].slice(-5).reduce((a, b) => a + b) / 5;
  expect(last).toBeLessThan(first / 2);
  const [a, b] = students.map((s) => s.exportWeights().w1.data);
  expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
  for (const l of [teacher, ...students]) l.dispose();
});

test('refusals', () => {
  const layer = new MoELayer(c, randomWeights(c, 7));
  const grads = gradsOf(layer, 8);
  expectError(() => layer.step(grads, { kind: 'adam' } as never), 'RangeError', /optimizer\.kind/);
  expectError(() => layer.step(grads, { kind: 'sgd', lr: -1 }), 'RangeError', /optimizer\.lr >= 0/);
  expectError(() => layer.step(grads, { kind: 'sgd', lr: 0.1, beta1: 0.9 } as never), 'RangeError', /no optimizer\.beta1 with 'sgd'/);
  expectError(() => layer.step({ ...grads, w1: Tensor.zeros([1, 2]) }, { kind: 'sgd', lr: 0.1 }), 'RangeError', /grads\.w1/);
  layer.step(grads, { kind: 'sgd', lr: 0.1 });
  expectError(() => layer.step(grads, { kind: 'adamw', lr: 0.1 }), 'RangeError', /optimizer\.kind 'sgd'/);
  const bf16 = new MoELayer({ ...c, weightDtype: 'bfloat16' }, randomWeights(c, 9));
  expectError(() => bf16.step(gradsOf(bf16, 10), { kind: 'sgd', lr: 0.1 }), 'RangeError', /weightDtype 'float32' for an optimizer step/);
  for (const l of [layer, bf16]) l.dispose();
});
