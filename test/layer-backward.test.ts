/**
 * layer.backward against the float64 reference: the experts' gradients against referenceExpertsBackward, and the
 * whole layer's (input and router included) against central finite differences of the float64 reference forward;
 * awkward shapes, every activation, shared experts with their gate, a router bias, dropped slots; bitwise the same
 * for any thread count.
 */
import { ACTIVATIONS, Activation, MoELayer, Tensor, backendInfo, isGated, reference } from '../lib';
import { Case, expectError, randomWeights, relativeError } from './helpers';

const f64 = (t: Tensor | undefined) => (t ? Float64Array.from(t.data as Float32Array) : null);
function refWeights(w: ReturnType<typeof randomWeights>) {
  return { router: f64(w.router)!, w1: f64(w.w1)!, w3: f64(w.w3), w2: f64(w.w2)!, b1: f64(w.b1), b3: f64(w.b3), b2: f64(w.b2) };
}

/** The experts' gradients and dL/d(routing weights) against the float64 reference on the same routing. */
function checkExperts(c: Case, seed: number, extra: { capacityFactor?: number } = {}) {
  const w = randomWeights(c, seed);
  const router = extra.capacityFactor ? { kind: 'topK' as const, capacityFactor: extra.capacityFactor } : undefined;
  const layer = new MoELayer({ ...c, ...(router ? { router } : {}) }, w);
  const x = Tensor.randn([c.tokens, c.dModel], { seed: seed + 1 });
  const g = Tensor.randn([c.tokens, c.dModel], { seed: seed + 2 });
  const result = layer.forwardSync(x);
  const lb = layer.backward(x, result, g);
  const { experts, weights } = result.routing;
  const ref = reference.referenceExpertsBackward(
    x.data as Float32Array,
    c.tokens,
    refWeights(w),
    { ...c, normalizeTopK: true },
    c.topK,
    experts,
    weights,
    g.data as Float32Array,
  );
  for (const [name, got, want] of [
    ['w1', lb.w1, ref.dw1],
    ['w3', lb.w3, ref.dw3],
    ['w2', lb.w2, ref.dw2],
    ['b1', lb.b1, c.bias ? ref.db1 : null],
    ['b3', lb.b3, c.bias ? ref.db3 : null],
    ['b2', lb.b2, c.bias ? ref.db2 : null],
  ] as const) {
    if (want === null) {
      expect([name, got]).toEqual([name, undefined]);
      continue;
    }
    expect([name, relativeError(got!.data, want) < 1e-5]).toEqual([name, true]);
  }
  expect(relativeError(lb.gate.gradWeights!, ref.dWeights)).toBeLessThan(1e-5);
  // bitwise the same with one thread
  const one = new MoELayer({ ...c, threads: 1, ...(router ? { router } : {}) }, w);
  const lb1 = one.backward(x, one.forwardSync(x), g);
  for (const key of ['dx', 'w1', 'w2', 'router'] as const)
    expect(Buffer.from(lb1[key]!.data.buffer).equals(Buffer.from(lb[key]!.data.buffer))).toBe(true);
  layer.dispose();
  one.dispose();
  return result;
}

describe(`layer.backward, the experts' part (isa ${backendInfo().isa})`, () => {
  let seed = 300;
  for (const activation of ACTIVATIONS)
    it(`${activation}, biases`, () =>
      void checkExperts({ tokens: 13, dModel: 17, dHidden: 24, numExperts: 4, topK: 2, activation, bias: true }, seed++));
  it('1 token, k = E, no biases', () =>
    void checkExperts({ tokens: 1, dModel: 9, dHidden: 12, numExperts: 3, topK: 3, activation: 'swiglu', bias: false }, seed++));
  it('experts with no token (E = 16, 3 tokens, k = 1)', () =>
    void checkExperts({ tokens: 3, dModel: 8, dHidden: 8, numExperts: 16, topK: 1, activation: 'gelu', bias: true }, seed++));
  it('dropped slots (capacity factor 0.5)', () => {
    const r = checkExperts({ tokens: 24, dModel: 8, dHidden: 8, numExperts: 4, topK: 2, activation: 'swiglu', bias: true }, seed++, {
      capacityFactor: 0.5,
    });
    expect(r.routing.dropped).toBeGreaterThan(0);
  });
  it('more rows than a block, several threads', () =>
    void checkExperts({ tokens: 70, dModel: 33, dHidden: 20, numExperts: 3, topK: 2, activation: 'swiglu', bias: true }, seed++));
  // Several panels in every dimension and more rows per expert than a GEMM chunk (192): the transposed panels,
  // the chunked weight-gradient GEMMs and the unit kernel's vector loop and tail.
  for (const activation of ['swiglu', 'gelu-tanh', 'swiglu-clamped', 'relu'] as const)
    it(`several panels and chunks (${activation})`, () =>
      void checkExperts({ tokens: 301, dModel: 70, dHidden: 101, numExperts: 3, topK: 2, activation, bias: true }, seed++));
});

test('a bfloat16 layer differentiates the weights it computes with', () => {
  const c: Case = { tokens: 40, dModel: 48, dHidden: 40, numExperts: 4, topK: 2, activation: 'swiglu', bias: true };
  const bf16 = new MoELayer({ ...c, weightDtype: 'bfloat16' }, randomWeights(c, 41));
  const w = bf16.exportWeights();
  const f32 = new MoELayer(c, { router: w.router, w1: w.w1, w3: w.w3, w2: w.w2, b1: w.b1, b3: w.b3, b2: w.b2 });
  const x = Tensor.randn([c.tokens, c.dModel], { seed: 42 });
  const g = Tensor.randn([c.tokens, c.dModel], { seed: 43 });
  const a = bf16.backward(x, bf16.forwardSync(x), g);
  const b = f32.backward(x, f32.forwardSync(x), g);
  for (const key of ['w1', 'w3', 'w2', 'b1', 'dx'] as const)
    expect([key, Buffer.from(a[key]!.data.buffer).equals(Buffer.from(b[key]!.data.buffer))]).toEqual([key, true]);
  bf16.dispose();
  f32.dispose();
});

describe('backward into the arrays of earlier gradients', () => {
  const c: Case = { tokens: 20, dModel: 24, dHidden: 16, numExperts: 4, topK: 2, activation: 'swiglu', bias: true };
  const layer = new MoELayer(
    { ...c, sharedExperts: 1, sharedHidden: 16 },
    { ...randomWeights(c, 51), shared: randomWeights({ ...c, numExperts: 1 }, 52) },
  );
  const x = Tensor.randn([c.tokens, c.dModel], { seed: 53 });
  const g = Tensor.randn([c.tokens, c.dModel], { seed: 54 });
  afterAll(() => layer.dispose());

  it('writes them and returns them, with the same values as fresh arrays', () => {
    const r = layer.forwardSync(x);
    const first = layer.backward(x, r, Tensor.randn([c.tokens, c.dModel], { seed: 55 }));
    const fresh = layer.backward(x, r, g, { fresh: true });
    const reused = layer.backward(x, r, g, { into: first });
    for (const key of ['dx', 'w1', 'w3', 'w2', 'b1', 'b3', 'b2'] as const) {
      expect(reused[key]!.data).toBe(first[key]!.data);
      expect([key, Buffer.from(reused[key]!.data.buffer).equals(Buffer.from(fresh[key]!.data.buffer))]).toEqual([key, true]);
    }
    expect(reused.shared!.w1.data).toBe(first.shared!.w1.data);
    expect(Buffer.from(reused.shared!.w2.data.buffer).equals(Buffer.from(fresh.shared!.w2.data.buffer))).toBe(true);
  });

  it('refuses arrays of other shapes, and arrays that share memory', () => {
    const r = layer.forwardSync(x);
    const grads = layer.backward(x, r, g);
    expectError(
      () => layer.backward(x, r, g, { into: { ...grads, w1: Tensor.zeros([4, 16, 23]) } }),
      'RangeError',
      /options\.into\.w1\.shape/,
    );
    expectError(() => layer.backward(x, r, g, { into: { ...grads, w3: grads.w1 } }), 'RangeError', /share no memory/);
    expectError(() => layer.backward(x, r, g, { into: { ...grads, dx: x as Tensor<'float32'> } }), 'RangeError', /share no memory/);
    expectError(() => layer.backward(x, r, g, { into: 3 as never }), 'TypeError', /options\.into to be the gradients/);
    // nothing was written into the refused arrays' partners: the gradients are still those of g
    const again = layer.backward(x, r, g, { fresh: true });
    expect(Buffer.from(again.w2.data.buffer).equals(Buffer.from(grads.w2.data.buffer))).toBe(true);
  });
});

describe("the layer's own gradients (a backward's default destination)", () => {
  const c: Case = { tokens: 7, dModel: 24, dHidden: 16, numExperts: 4, topK: 2, activation: 'swiglu', bias: true };
  const copy = (t: Tensor) => Float32Array.from(t.data as Float32Array);
  const equal = (a: Float32Array, t: Tensor) => Buffer.from(a.buffer).equals(Buffer.from((t.data as Float32Array).buffer));

  it('a plain backward overwrites the arrays of the one before, with the values of fresh arrays', () => {
    const layer = new MoELayer(c, randomWeights(c, 61));
    const x = Tensor.randn([c.tokens, c.dModel], { seed: 62 });
    const r = layer.forwardSync(x);
    const first = layer.backward(x, r, Tensor.randn([c.tokens, c.dModel], { seed: 63 }));
    const firstW1 = copy(first.w1);
    const g = Tensor.randn([c.tokens, c.dModel], { seed: 64 });
    const second = layer.backward(x, r, g);
    const want = layer.backward(x, r, g, { fresh: true });
    for (const key of ['dx', 'w1', 'w3', 'w2', 'b1', 'b3', 'b2'] as const) {
      expect([key, second[key]!.data === first[key]!.data]).toEqual([key, true]);
      expect([key, want[key]!.data === first[key]!.data]).toEqual([key, false]);
      expect([key, equal(copy(want[key]!), second[key]!)]).toEqual([key, true]);
    }
    expect(equal(firstW1, second.w1)).toBe(false); // overwritten: another gradOutput
    // a fresh backward left the layer's own as they were; the next plain one writes them again
    const third = layer.backward(x, r, Tensor.randn([c.tokens, c.dModel], { seed: 63 }));
    expect(third.w2.data).toBe(first.w2.data);
    expect(equal(firstW1, third.w1)).toBe(true);
    layer.dispose();
  });

  it("another token count: a new dx, the weights' arrays kept; async settles into them", async () => {
    const layer = new MoELayer(c, randomWeights(c, 65));
    const x = Tensor.randn([c.tokens, c.dModel], { seed: 66 });
    const first = layer.backward(x, layer.forwardSync(x), Tensor.randn([c.tokens, c.dModel], { seed: 67 }));
    const x1 = Tensor.randn([1, c.dModel], { seed: 68 });
    const g1 = Tensor.randn([1, c.dModel], { seed: 69 });
    const r1 = layer.forwardSync(x1);
    const one = layer.backward(x1, r1, g1);
    expect(one.dx.shape).toEqual([1, c.dModel]);
    expect(one.w1.data).toBe(first.w1.data);
    const want = layer.backward(x1, r1, g1, { fresh: true });
    const got = await layer.backwardAsync(x1, r1, g1);
    expect(got.w2.data).toBe(first.w2.data);
    expect(got.dx.data).toBe(one.dx.data);
    for (const key of ['dx', 'w1', 'w3', 'w2', 'b2'] as const) expect([key, equal(copy(want[key]!), got[key]!)]).toEqual([key, true]);
    layer.dispose();
  });

  it("new arrays where the caller detached one of the layer's own", () => {
    const layer = new MoELayer(c, randomWeights(c, 73));
    const x = Tensor.randn([c.tokens, c.dModel], { seed: 74 });
    const r = layer.forwardSync(x);
    const g = Tensor.randn([c.tokens, c.dModel], { seed: 75 });
    const first = layer.backward(x, r, g);
    const buffer = first.w2.data.buffer as ArrayBuffer;
    structuredClone(buffer, { transfer: [buffer] }); // detaches it
    const second = layer.backward(x, r, g);
    expect(second.w1.data).not.toBe(first.w1.data);
    expect(equal(copy(layer.backward(x, r, g, { fresh: true }).w2), second.w2)).toBe(true);
    expect(layer.backward(x, r, g).w2.data).toBe(second.w2.data); // and those are the layer's own from then on
    layer.dispose();
  });

  it('refuses fresh with into, and a fresh that is not a boolean', () => {
    const layer = new MoELayer(c, randomWeights(c, 70));
    const x = Tensor.randn([c.tokens, c.dModel], { seed: 71 });
    const r = layer.forwardSync(x);
    const g = Tensor.randn([c.tokens, c.dModel], { seed: 72 });
    const grads = layer.backward(x, r, g);
    expectError(() => layer.backward(x, r, g, { into: grads, fresh: true }), 'RangeError', /options\.into or options\.fresh, not both/);
    expectError(() => layer.backward(x, r, g, { fresh: 1 as never }), 'TypeError', /options\.fresh to be a boolean but got a number \(1\)/);
    layer.dispose();
  });
});

/** L = <g, output>: its gradient by central differences of the float64 reference layer (routing recomputed). */
function fdCheck(activation: Activation, opts: { shared?: boolean; routerBias?: boolean }, seed: number) {
  const c: Case = { tokens: 4, dModel: 6, dHidden: 5, numExperts: 4, topK: 2, activation, bias: true };
  const w = randomWeights(c, seed);
  const shared = opts.shared ? randomWeights({ ...c, numExperts: 1, dHidden: 3 }, seed + 1) : undefined;
  const sharedGate = opts.shared ? Tensor.randn([1, c.dModel], { seed: seed + 2, std: 0.5 }) : undefined;
  const routerBias = opts.routerBias ? Tensor.randn([c.numExperts], { seed: seed + 3, std: 0.5 }) : undefined;
  const config = { ...c, ...(opts.shared ? { sharedExperts: 1, sharedHidden: 3 } : {}) };
  const layer = new MoELayer(config, { ...w, ...(shared ? { shared, sharedGate } : {}), ...(routerBias ? { routerBias } : {}) });
  const x = Tensor.randn([c.tokens, c.dModel], { seed: seed + 4 });
  const g = Tensor.randn([c.tokens, c.dModel], { seed: seed + 5 });
  const lb = layer.backward(x, layer.forwardSync(x), g);
  layer.dispose();
  const params: Record<string, Float64Array> = {
    x: f64(x)!,
    router: f64(w.router)!,
    w1: f64(w.w1)!,
    w2: f64(w.w2)!,
    ...(isGated(activation) ? { w3: f64(w.w3)! } : {}),
    b2: f64(w.b2)!,
    ...(routerBias ? { routerBias: f64(routerBias)! } : {}),
    ...(shared ? { sw1: f64(shared.w1)!, sharedGate: f64(sharedGate)! } : {}),
  };
  const loss = (p: Record<string, Float64Array>) => {
    const logits = reference.referenceRouterLogits(p.x, c.tokens, c.dModel, p.router, c.numExperts);
    if (p.routerBias) for (let i = 0; i < logits.length; i++) logits[i] += p.routerBias[i % c.numExperts];
    const { experts, weights } = reference.referenceTopK(logits, c.tokens, c.numExperts, c.topK, true);
    const rw = { ...refWeights(w), router: p.router, w1: p.w1, w2: p.w2, w3: p.w3 ?? null, b2: p.b2 };
    const sh = shared ? { weights: { ...refWeights(shared), w1: p.sw1 }, count: 1, dHidden: 3, gate: p.sharedGate } : undefined;
    const out = reference.referenceExperts(p.x, c.tokens, rw, { ...c, normalizeTopK: true }, c.topK, experts, weights, sh);
    return out.reduce((s, v, i) => s + v * (g.data[i] as number), 0);
  };
  const analytic: Record<string, ArrayLike<number>> = {
    x: lb.dx.data,
    router: lb.router.data,
    w1: lb.w1.data,
    w2: lb.w2.data,
    ...(lb.w3 ? { w3: lb.w3.data } : {}),
    b2: lb.b2!.data,
    ...(lb.routerBias ? { routerBias: lb.routerBias.data } : {}),
    ...(lb.shared ? { sw1: lb.shared.w1.data, sharedGate: lb.sharedGate!.data } : {}),
  };
  const eps = 1e-6;
  for (const [name, v] of Object.entries(params)) {
    const numeric = new Float64Array(v.length);
    for (let i = 0; i < v.length; i++) {
      const keep = v[i];
      v[i] = keep + eps;
      const up = loss(params);
      v[i] = keep - eps;
      const down = loss(params);
      v[i] = keep;
      numeric[i] = (up - down) / (2 * eps);
    }
    expect([name, relativeError(analytic[name], numeric) < 2e-4]).toEqual([name, true]);
  }
}

describe('layer.backward, the whole layer by finite differences of the float64 reference', () => {
  for (const activation of ['swiglu', 'gelu', 'swiglu-clamped'] as const)
    it(`${activation}: input, router, experts`, () => fdCheck(activation, {}, 500));
  it('shared expert with its gate, and a router bias', () => fdCheck('swiglu', { shared: true, routerBias: true }, 510));
});

test('refusals', () => {
  const c: Case = { tokens: 3, dModel: 8, dHidden: 8, numExperts: 4, topK: 2, activation: 'swiglu', bias: false };
  const layer = new MoELayer({ ...c, router: { kind: 'topK', jitter: 0.1 } }, randomWeights(c, 1));
  const x = Tensor.randn([3, 8], { seed: 2 });
  const r = layer.forwardSync(x, { training: true });
  expectError(() => layer.backward(x, r, Tensor.zeros([3, 7])), 'RangeError', /gradOutput\.shape\[1\] = 8 \(dModel\)/);
  expectError(() => layer.backward(x, r, Tensor.zeros([3, 8])), 'RangeError', /without jitter/);
  const plain = layer.forwardSync(x);
  expect(layer.backward(x, plain, Tensor.zeros([3, 8])).dx.shape).toEqual([3, 8]);
  expectError(() => layer.backward(x, null as never, Tensor.zeros([3, 8])), 'TypeError', /result to be the result/);
  layer.dispose();
  expectError(() => layer.backward(x, plain, Tensor.zeros([3, 8])), 'TypeError', /not disposed/);
});

describe('a training forward keeps the pre-activations for its backward', () => {
  const c: Case = { tokens: 37, dModel: 40, dHidden: 72, numExperts: 4, topK: 2, activation: 'swiglu', bias: true };
  const x = Tensor.randn([c.tokens, c.dModel], { seed: 61 });
  const g = Tensor.randn([c.tokens, c.dModel], { seed: 62 });
  const same = (a: Tensor, b: Tensor) => Buffer.from(a.data.buffer).equals(Buffer.from(b.data.buffer));

  it('with the same gradients, bitwise, as recomputing them (native and TypeScript routing)', () => {
    for (const tsRouted of [false, true]) {
      // a router bias routes in TypeScript (forwardRouted)
      const routerBias = tsRouted ? { routerBias: Tensor.randn([c.numExperts], { seed: 66 }) } : {};
      const layer = new MoELayer(c, { ...randomWeights(c, 63), ...routerBias });
      const other = new MoELayer(c, { ...randomWeights(c, 63), ...routerBias }); // has kept nothing
      const a = layer.backward(x, layer.forwardSync(x, { training: true }), g);
      const b = other.backward(x, other.forwardSync(x, { training: true, recompute: true }), g);
      for (const key of ['dx', 'w1', 'w3', 'w2', 'b1', 'router'] as const) expect([key, same(a[key]!, b[key]!)]).toEqual([key, true]);
      layer.dispose();
      other.dispose();
    }
  });

  it('not for another input, nor after an optimizer step', () => {
    const w = randomWeights(c, 64);
    const layer = new MoELayer(c, w);
    const r = layer.forwardSync(x, { training: true });
    const x2 = Tensor.randn([c.tokens, c.dModel], { seed: 65 });
    const r2 = layer.forwardSync(x2); // not a training forward: what was kept is x's
    const grads = layer.backward(x, r, g);
    const fresh = new MoELayer(c, w);
    expect(same(layer.backward(x2, r2, g).w1, fresh.backward(x2, fresh.forwardSync(x2), g).w1)).toBe(true);
    layer.step(grads, { kind: 'sgd', lr: 0.1 });
    fresh.step(grads, { kind: 'sgd', lr: 0.1 });
    // r is of the old weights: refused (PyTorch refuses a backward through weights changed in place since)
    expectError(
      () => layer.backward(x, r, g),
      'RangeError',
      /a result of a forward since the layer's last step \(step 1\) but got a result of a forward before step 1/,
    );
    // a training forward after the step keeps the new pre-activations: the same as recomputing them
    const after = layer.backward(x, layer.forwardSync(x, { training: true }), g);
    const want = fresh.backward(x, fresh.forwardSync(x), g);
    for (const key of ['dx', 'w1', 'w3', 'w2'] as const) expect([key, same(after[key]!, want[key]!)]).toEqual([key, true]);
    layer.dispose();
    fresh.dispose();
  });
});

describe('backwardAsync', () => {
  const c: Case = { tokens: 30, dModel: 24, dHidden: 40, numExperts: 4, topK: 2, activation: 'swiglu', bias: true };
  const x = Tensor.randn([c.tokens, c.dModel], { seed: 71 });
  const g = Tensor.randn([c.tokens, c.dModel], { seed: 72 });
  const same = (a: Tensor, b: Tensor) =>
    Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength).equals(
      Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength),
    );

  it('gives the gradients of backward, bitwise, with its inputs copied', async () => {
    const layer = new MoELayer(
      { ...c, sharedExperts: 1, sharedHidden: 8 },
      { ...randomWeights(c, 73), shared: randomWeights({ ...c, numExperts: 1, dHidden: 8 }, 74) },
    );
    const r = layer.forwardSync(x, { training: true });
    const want = layer.backward(x, r, g, { fresh: true });
    const xc = Tensor.from(Float32Array.from(x.data as Float32Array), x.shape);
    const gc = Tensor.from(Float32Array.from(g.data as Float32Array), g.shape);
    const pending = layer.backwardAsync(xc, r, gc);
    (xc.data as Float32Array).fill(9); // after the call: the backward works on its copies
    (gc.data as Float32Array).fill(9);
    const got = await pending;
    for (const key of ['dx', 'w1', 'w3', 'w2', 'b1', 'b2', 'router'] as const)
      expect([key, same(got[key]!, want[key]!)]).toEqual([key, true]);
    expect(same(got.shared!.w1, want.shared!.w1)).toBe(true);
    layer.dispose();
  });

  it('copies into `into` when it settles, and refuses an `into` detached meanwhile', async () => {
    const layer = new MoELayer(c, randomWeights(c, 75));
    const r = layer.forwardSync(x);
    const want = layer.backward(x, r, g, { fresh: true });
    const into = layer.backward(x, r, Tensor.randn([c.tokens, c.dModel], { seed: 76 }), { fresh: true });
    const got = await layer.backwardAsync(x, r, g, { into });
    expect(got.w1.data).toBe(into.w1.data);
    for (const key of ['dx', 'w1', 'w3', 'w2', 'b3'] as const) expect([key, same(got[key]!, want[key]!)]).toEqual([key, true]);
    const victim = layer.backward(x, r, Tensor.randn([c.tokens, c.dModel], { seed: 77 }));
    const before = Float32Array.from(victim.dx.data as Float32Array);
    const pending = layer.backwardAsync(x, r, g, { into: victim });
    const buffer = victim.w2.data.buffer as ArrayBuffer;
    structuredClone(buffer, { transfer: [buffer] }); // detaches it
    await expect(pending).rejects.toThrow(/keep its .* elements while the backward ran/);
    expect(Buffer.from((victim.dx.data as Float32Array).buffer).equals(Buffer.from(before.buffer))).toBe(true); // nothing written
    await expect(layer.backwardAsync(x, r, g, { into: { ...victim, w1: Tensor.zeros([4, 40, 23]) } })).rejects.toThrow(
      /options\.into\.w1\.shape/,
    );
    layer.dispose();
  });
});

test("the weights' transposed panels follow the optimizer's steps", () => {
  // A layer that backpropagates and steps keeps its transposed panels up to date; a layer built from its exported
  // weights turns them afresh: the same gradients, bitwise, after every step (gated and not, biases, odd sizes).
  for (const activation of ['swiglu', 'gelu'] as const) {
    const c: Case = { tokens: 45, dModel: 37, dHidden: 70, numExperts: 3, topK: 2, activation, bias: true };
    const layer = new MoELayer(c, randomWeights(c, 81));
    const x = Tensor.randn([c.tokens, c.dModel], { seed: 82 });
    const g = Tensor.randn([c.tokens, c.dModel], { seed: 83 });
    for (let step = 0; step < 3; step++) {
      const grads = layer.backward(x, layer.forwardSync(x, { training: true }), g);
      const w = layer.exportWeights();
      const copy = new MoELayer(c, { router: w.router, w1: w.w1, w3: w.w3, w2: w.w2, b1: w.b1, b3: w.b3, b2: w.b2 });
      const want = copy.backward(x, copy.forwardSync(x), g);
      for (const key of ['dx', 'w1', 'w2', 'b1'] as const)
        expect([activation, step, key, Buffer.from(grads[key]!.data.buffer).equals(Buffer.from(want[key]!.data.buffer))]).toEqual([
          activation,
          step,
          key,
          true,
        ]);
      copy.dispose();
      layer.step(grads, { kind: 'adamw', lr: 0.05 });
    }
    layer.dispose();
  }
});
