/** Invalid router options: clear errors in the one format. */
import { MoELayer, Tensor, gating } from '../../lib';
import { expectError, randomWeights } from '../helpers';

const l = { data: new Float64Array(3 * 4), shape: [3, 4] };

describe('routers refuse invalid options', () => {
  it('k > E, k < 1', () => {
    expectError(() => gating.topK(l, { k: 5 }), 'RangeError', /k to be an integer in \[1, 4\] but got 5/);
    expectError(() => gating.noisyTopK(l, l, { k: 0 }), 'RangeError', /k to be an integer in \[1, 4\] but got 0/);
    expectError(() => gating.sigmoidBias(l, { k: 5 }), 'RangeError', /k \(at most topKGroups x experts per group = 4\)/);
  });
  it('capacityFactor <= 0 or not finite', () => {
    expectError(
      () => gating.switchTop1(l, { capacityFactor: 0 }),
      'RangeError',
      /capacityFactor to be a finite number > 0 but got a number \(0\)/,
    );
    expectError(() => gating.topK(l, { k: 1, capacityFactor: -1 }), 'RangeError', /capacityFactor/);
    expectError(() => gating.expertChoice(l, { capacityFactor: NaN }), 'RangeError', /capacityFactor/);
    expectError(() => gating.expertCapacity(4, 4, 1, Infinity), 'RangeError', /capacityFactor/);
  });
  it('groups that do not divide E, topKGroups > numGroups', () => {
    expectError(() => gating.sigmoidBias(l, { k: 1, numGroups: 3 }), 'RangeError', /numGroups to divide numExperts = 4 but got 3/);
    expectError(
      () => gating.sigmoidBias(l, { k: 1, numGroups: 2, topKGroups: 3 }),
      'RangeError',
      /topKGroups \(numGroups = 2\) to be an integer in \[1, 2\] but got 3/,
    );
    expectError(() => gating.sigmoidBias(l, { k: 1, bias: [1, 2] }), 'RangeError', /bias\.length = 4/);
  });
  it('bad logits, options and gradients', () => {
    expectError(
      () => gating.topK({ data: [1, NaN], shape: [1, 2] }, { k: 1 }),
      'RangeError',
      /logits to contain only finite values but got NaN at logits\[0, 1\]/,
    );
    expectError(() => gating.topK({ data: [1, 2, 3], shape: [1, 2] }, { k: 1 }), 'RangeError', /logits\.data to have 2 elements/);
    expectError(() => gating.topK(l, { k: 1, order: 'sorted' as never }), 'RangeError', /order to be one of/);
    expectError(
      () => gating.topK(l, { k: 2, order: 'topk-softmax', normalize: false }),
      'RangeError',
      /normalize: false only with order 'softmax-topk'/,
    );
    expectError(() => gating.topK(l, { k: 1, dropPolicy: 'random' as never, capacityFactor: 1 }), 'RangeError', /dropPolicy/);
    expectError(
      () => gating.noisyTopK(l, { data: new Float64Array(8), shape: [2, 4] }, { k: 1 }),
      'RangeError',
      /noiseLogits of shape \[3, 4\]/,
    );
    expectError(() => gating.gshardTop2({ data: [1, 2], shape: [2, 1] }), 'RangeError', /at least 2 experts/);
    const gate = gating.topK(l, { k: 2 });
    expectError(() => gating.topKBackward(gate, new Float64Array(5)), 'RangeError', /gradWeights\.length = 6 \(tokens \* topK\) but got 5/);
  });
});

describe('MoELayer refuses invalid router configs', () => {
  const c = { tokens: 4, dModel: 8, dHidden: 12, numExperts: 4, topK: 2, activation: 'swiglu' as const, bias: false };
  const w = randomWeights(c, 1);
  const cfg = { dModel: 8, dHidden: 12, numExperts: 4 };
  it('noise options without W_noise, and W_noise without noise', () => {
    expectError(
      () => new MoELayer({ ...cfg, topK: 2, router: { kind: 'noisyTopK' } }, w),
      'TypeError',
      /weights\.noiseRouter to be a Tensor \[4, 8\] \(W_noise of noisy top-k\) but got undefined/,
    );
    expectError(
      () => new MoELayer({ ...cfg, topK: 2 }, { ...w, noiseRouter: Tensor.zeros([4, 8]) }),
      'RangeError',
      /no weights\.noiseRouter \(router 'topK' has no noise\)/,
    );
  });
  it('k against the router kind, unknown kinds, bad options', () => {
    expectError(
      () => new MoELayer({ ...cfg, topK: 5 }, w),
      'RangeError',
      /config\.topK \(numExperts = 4\) to be an integer in \[1, 4\] but got 5/,
    );
    expectError(
      () => new MoELayer({ ...cfg, topK: 2, router: { kind: 'switch' } }, w),
      'RangeError',
      /config\.topK = 1 \(implied by router 'switch'\) or none/,
    );
    expectError(
      () => new MoELayer({ ...cfg, topK: 2, router: { kind: 'expertChoice' } }, w),
      'RangeError',
      /no config\.topK with router 'expertChoice'/,
    );
    expectError(
      () => new MoELayer({ ...cfg, topK: 2, router: { kind: 'hash' } as never }, w),
      'RangeError',
      /config\.router\.kind to be one of/,
    );
    expectError(
      () => new MoELayer({ ...cfg, topK: 2, router: { kind: 'topK', capacityFactor: 0 } }, w),
      'RangeError',
      /config\.router\.capacityFactor to be a finite number > 0/,
    );
    expectError(
      () => new MoELayer({ ...cfg, topK: 2, router: { kind: 'sigmoidBias', numGroups: 3 } }, w),
      'RangeError',
      /numGroups to divide numExperts = 4/,
    );
    expectError(
      () => new MoELayer({ ...cfg, topK: 2, router: { kind: 'sigmoidBias', numGroups: 2, topKGroups: 4 } }, w),
      'RangeError',
      /topKGroups/,
    );
    expectError(
      () => new MoELayer({ ...cfg, topK: 2, router: { kind: 'topK', jitter: 1.5 } }, w),
      'RangeError',
      /config\.router\.jitter < 1/,
    );
  });
  it('shared experts without their weights', () => {
    expectError(
      () => new MoELayer({ ...cfg, topK: 2, sharedExperts: 1 }, w),
      'TypeError',
      /weights\.shared to be expert weights for 1 shared experts but got undefined/,
    );
    expectError(
      () => new MoELayer({ ...cfg, topK: 2, sharedExperts: 1 }, { ...w, shared: { w1: w.w1, w3: w.w3, w2: w.w2 } }),
      'RangeError',
      /weights\.shared\.w1\.shape\[0\] = 1 \(numExperts\) but got 4/,
    );
  });
  it('forward options', () => {
    const layer = new MoELayer({ ...cfg, topK: 2 }, w);
    expectError(
      () => layer.forwardSync(Tensor.zeros([2, 8]), { training: 'yes' as never }),
      'TypeError',
      /options\.training to be a boolean/,
    );
  });
});
