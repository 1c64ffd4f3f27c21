/**
 * Inputs that once crashed the process, hung it, allocated until it died, or were accepted with a wrong answer
 * (issue 15's list). Each is now refused at once in the one error format, or handled correctly.
 */
import { MoELayer, Tensor, gating, kernels, losses } from '../lib';
import { expectError } from './helpers';

const config = { dModel: 8, dHidden: 12, numExperts: 4, topK: 2 };
const logits = { data: new Float64Array(12).map((_, i) => Math.sin(i)), shape: [3, 4] };

function quickly(fn: () => unknown, kind: 'TypeError' | 'RangeError', re: RegExp): void {
  const started = Date.now();
  expectError(fn, kind, re);
  expect(Date.now() - started).toBeLessThan(1000);
}

describe('sizes past what a call can use are refused at once', () => {
  it('dispatch with 2^31 experts (once 114 s and 16.8 GB)', () => {
    quickly(() => kernels.dispatch(new Int32Array([0]), 2 ** 31), 'RangeError', /numExperts to be an integer in \[1, 16777216\]/);
  });
  it('MoELayer.random with dModel 2^31 (once V8\'s raw "Invalid typed array length") or weights past 2^32 elements', () => {
    quickly(() => MoELayer.random({ ...config, dModel: 2 ** 31 }), 'RangeError', /config.dModel to be an integer in \[1, 2147483647\]/);
    quickly(
      () => MoELayer.random({ ...config, dModel: 2 ** 20, dHidden: 2 ** 20 }),
      'RangeError',
      /weights .* to have at most 4294967296 elements/,
    );
    quickly(() => Tensor.zeros([2 ** 20, 2 ** 20]), 'RangeError', /shape \[1048576, 1048576\] to have at most 4294967296 elements/);
  });
  it('applyCapacity with 2^31 tokens (once a V8 fatal error)', () => {
    quickly(
      () => gating.applyCapacity(new Int32Array(1), new Float64Array(1), [0], 2 ** 31, 1, 2, 1, 'position'),
      'RangeError',
      /tokens to be an integer/,
    );
  });
  it('importanceLoss with a hand-made gate of 2^31 - 1 experts (once a 16 GB allocation)', () => {
    const forged = { kind: 'topK', experts: new Int32Array(1), weights: new Float64Array(1), topK: 1, numExperts: 2 ** 31 - 1, tokens: 1 };
    quickly(() => losses.importanceLoss(forged as never), 'TypeError', /a router result as the router returned it/);
  });
});

describe('loops that never ended', () => {
  it('routingStats with topK 0', () => {
    const routing = { topK: 0, experts: new Int32Array(0), weights: new Float32Array(0), tokensPerExpert: new Int32Array(2) };
    quickly(() => losses.routingStats(routing), 'RangeError', /routing.topK to be an integer in \[1, 16777216\] but got 0/);
  });
  it('softmaxBackward with numExperts 5e-324', () => {
    quickly(() => losses.softmaxBackward([0.5, 0.5], [1, 1], 5e-324), 'RangeError', /numExperts to be an integer/);
  });
});

describe('values that only look right', () => {
  it('a faked Symbol.toStringTag or a lying length is not a typed array', () => {
    const fake = { [Symbol.toStringTag]: 'Float32Array', length: 24, 0: 1 };
    expectError(() => Tensor.from(fake as never, [3, 8]), 'TypeError', /data to be a typed array/);
    const lying = Object.defineProperty(new Float32Array(4), 'length', { get: () => 24 });
    expectError(() => Tensor.from(lying, [3, 8]), 'TypeError', /data to be a typed array/);
  });
  it('plain { dtype, shape, data } objects are checked and wrapped (once "t.toFloat32 is not a function")', () => {
    const t = (shape: number[], seed: number) => ({ dtype: 'float32', shape, data: Tensor.randn(shape, { seed }).data });
    const weights = { router: t([4, 8], 1), w1: t([4, 12, 8], 2), w3: t([4, 12, 8], 3), w2: t([4, 8, 12], 4) };
    const layer = new MoELayer(config, weights as never);
    expect(layer.forwardSync(t([3, 8], 5) as never).output.shape).toEqual([3, 8]);
    expectError(
      () => layer.forwardSync({ dtype: 'float32', shape: [3, 8], data: new Float32Array(5) } as never),
      'RangeError',
      /x to be a Tensor: data to have 24 elements/,
    );
    layer.dispose();
  });
  it('numbers, strings and null where options belong, and seeds out of range', () => {
    expectError(() => MoELayer.random(config, 1 as never), 'TypeError', /options to be an object but got a number/);
    expectError(() => Tensor.randn([2], 'x' as never), 'TypeError', /options to be an object/);
    expectError(() => gating.expertChoice(logits, null as never), 'TypeError', /options to be an object but got null/);
    for (const seed of [-1, 1.5, 2 ** 32, NaN])
      expectError(() => Tensor.randn([2], { seed }), 'RangeError', /options.seed to be an integer in \[0, 4294967295\]/);
    for (const seed of ['abc', {}])
      expectError(() => MoELayer.random(config, { seed } as never), 'TypeError', /options.seed to be an integer/);
    expectError(() => gating.noisyTopK(logits, logits, { k: 2, training: true, seed: -1 }), 'RangeError', /options.seed/);
    // A Symbol once reached a template string ("Cannot convert a Symbol value to a string"), found by the fuzzer.
    expectError(
      () => MoELayer.random({ ...config, topK: Symbol('k') as never, router: { kind: 'expertChoice', capacityFactor: 1 } }),
      'RangeError',
      /no config.topK .* but got a Symbol/,
    );
    expectError(
      () => losses.sequenceBalanceLoss({ data: new Float64Array(4), shape: [1, 4] }, 1, 1, Symbol('a') as never),
      'RangeError',
      /alpha to be a finite number >= 0 but got a Symbol/,
    );
  });
});

describe('wrong answers that were accepted', () => {
  const layer = MoELayer.random(config, { seed: 1 });
  afterAll(() => layer.dispose());

  it('NaN into routerLogits or combine, and a finite x whose forward overflows float32', () => {
    expectError(
      () => kernels.routerLogits(Tensor.from(new Float32Array(8).fill(NaN), [1, 8]), Tensor.zeros([4, 8])),
      'RangeError',
      /x to contain only finite values but got NaN/,
    );
    expectError(
      () => kernels.combine(Tensor.zeros([2, 8]), new Float32Array([1, NaN]), 2),
      'RangeError',
      /weights to contain only finite values/,
    );
    expectError(
      () => layer.forwardSync(Tensor.from(new Float32Array(8).fill(1e30), [1, 8])),
      'RangeError',
      /forward stays within float32 but got a non-finite output/,
    );
  });
  it('gating.backward with a NaN or short gradient, and a gate of the wrong kind', () => {
    const gate = gating.topK(logits, { k: 2 });
    expectError(() => gating.backward(gate, new Float64Array(6).fill(NaN)), 'RangeError', /gradWeights to contain only finite numbers/);
    expectError(() => gating.backward(gate, new Float64Array(2)), 'RangeError', /gradWeights.length = 6/);
    expectError(
      () => gating.topKBackward(gating.soft(logits) as never, new Float64Array(12)),
      'TypeError',
      /gate to be a result of gating.topK but got a 'soft' result/,
    );
    expectError(() => gating.backward({ ...gate }, new Float64Array(6)), 'TypeError', /as it returned it but got a copy/);
  });
  it('gateGradients with logits shorter than their shape, or a NaN gradient', () => {
    const x = Tensor.randn([3, 8], { seed: 2 });
    const result = layer.forwardSync(x);
    const short = { ...result, routing: { ...result.routing, logits: { dtype: 'float32', shape: [3, 4], data: new Float32Array(2) } } };
    expectError(
      () => layer.gateGradients(x, short as never),
      'RangeError',
      /result.routing.logits to be a Tensor: data to have 12 elements/,
    );
    expectError(
      () => layer.gateGradients(x, result, Tensor.from(new Float32Array(24).fill(NaN), [3, 8])),
      'RangeError',
      /gradOutput to contain only finite values/,
    );
  });
  it('loss options: alpha Infinity, coefficient NaN, an unknown scale, expert ids past numExperts', () => {
    const probs = { data: new Float64Array(12).fill(0.25), shape: [3, 4] };
    const first = new Int32Array([0, 1, 2]);
    expectError(() => losses.switchLoss(probs, first, { alpha: Infinity }), 'RangeError', /options.alpha to be a finite number/);
    expectError(() => losses.importanceLoss(probs, { coefficient: NaN }), 'RangeError', /options.coefficient to be a finite number/);
    expectError(
      () => losses.gshardLoss(probs, first, { scale: 'bogus' as never }),
      'RangeError',
      /options.scale to be one of 'deepspeed', 'paper'/,
    );
    const scores = { data: new Float64Array(12).fill(0.5), shape: [3, 4] };
    expectError(
      () => losses.sequenceBalanceLoss(scores, 1, 3, 0.1, { experts: new Int32Array([0, 9, 1]) }),
      'RangeError',
      /options.experts\[1\] in \[-1, 3\] but got 9/,
    );
  });
  it("the caller's noiseRouter changed after construction does not change later forwards", () => {
    const w = {
      router: Tensor.randn([4, 8], { seed: 1 }),
      noiseRouter: Tensor.randn([4, 8], { seed: 2 }),
      w1: Tensor.randn([4, 12, 8], { seed: 3 }),
      w3: Tensor.randn([4, 12, 8], { seed: 4 }),
      w2: Tensor.randn([4, 8, 12], { seed: 5 }),
    };
    const noisy = new MoELayer({ ...config, router: { kind: 'noisyTopK', seed: 3 } }, w);
    const x = Tensor.randn([5, 8], { seed: 6 });
    const before = noisy.forwardSync(x, { training: true }).output.data;
    const again = new MoELayer({ ...config, router: { kind: 'noisyTopK', seed: 3 } }, w);
    (w.noiseRouter.data as Float32Array).fill(100);
    expect(again.forwardSync(x, { training: true }).output.data).toEqual(before);
    noisy.dispose();
    again.dispose();
  });
});

describe('gateGradients with a result whose gate was not made by a forward', () => {
  it('is refused in the format (once a raw TypeError for an unknown kind, and a message about gradOutput for a copy)', () => {
    const layer = MoELayer.random(config, { seed: 1 });
    const x = Tensor.randn([3, config.dModel], { seed: 2 });
    const r = layer.forwardSync(x);
    const grad = Tensor.randn([3, config.dModel], { seed: 3 });
    const withGate = (gate: unknown) => ({ ...r, routing: { ...r.routing, gate } }) as unknown as typeof r;
    quickly(() => layer.gateGradients(x, withGate({ kind: 'bogus' }), grad), 'TypeError', /expected gate to be a router result/);
    quickly(() => layer.gateGradients(x, withGate({ kind: '__proto__' }), grad), 'TypeError', /expected gate to be a router result/);
    quickly(
      () => layer.gateGradients(x, withGate({ kind: 'noisyTopK' }), grad),
      'TypeError',
      /routing.gate to be the gate this layer's forward returned/,
    );
    const routed = MoELayer.random({ dModel: 8, dHidden: 12, numExperts: 4, router: { kind: 'switch' } }, { seed: 1 });
    const s = routed.forwardSync(x);
    expect(() => routed.gateGradients(x, s, grad)).not.toThrow();
    quickly(
      () => routed.gateGradients(x, { ...s, routing: { ...s.routing, gate: { ...s.routing.gate! } } }, grad),
      'TypeError',
      /a copy or a hand-made object/,
    );
  });
});
