/** Bad input: a TypeError or RangeError in the one format, naming the parameter, never a crash. */
import { MoELayer, ReadProbe, Tensor, kernels, setThreads } from '../lib';
import { Case, expectError, randomWeights } from './helpers';

const c: Case = { tokens: 4, dModel: 16, dHidden: 24, numExperts: 4, topK: 2, activation: 'swiglu', bias: false };
const config = { dModel: 16, dHidden: 24, numExperts: 4, topK: 2 };

describe('MoELayer refuses bad input', () => {
  const w = randomWeights(c, 1);
  const layer = new MoELayer(config, w);
  const x = Tensor.randn([4, 16], { seed: 2 });

  it('wrong x shape or dtype', () => {
    expectError(() => layer.forwardSync(Tensor.zeros([4, 12])), 'RangeError', /expected x\.shape\[1\] = 16 \(dModel\) but got 12/);
    expectError(() => layer.forwardSync(Tensor.zeros([4, 16, 1])), 'RangeError', /x to have 2 dimensions/);
    expectError(() => layer.forwardSync(Tensor.zeros([0, 16])), 'RangeError', /tokens.*but got 0/);
    expectError(() => layer.forwardSync(Tensor.zeros([4, 16], 'int32')), 'TypeError', /x\.dtype to be 'float32' but got 'int32'/);
    expectError(() => layer.forwardSync(new Float32Array(64) as never), 'TypeError', /x to be a Tensor but got a Float32Array/);
    expectError(() => layer.forwardSync(undefined as never), 'TypeError', /x to be a Tensor but got undefined/);
  });

  it('a bad options.out', () => {
    expectError(
      () => layer.forwardSync(x, { out: Tensor.zeros([4, 15]) }),
      'RangeError',
      /expected options\.out\.shape\[1\] = 16 \(dModel\) but got 15/,
    );
    expectError(
      () => layer.forwardSync(x, { out: Tensor.zeros([3, 16]) }),
      'RangeError',
      /expected options\.out\.shape\[0\] = 4 \(tokens\) but got 3/,
    );
    expectError(
      () => layer.forwardSync(x, { out: Tensor.zeros([4, 16], 'int32') }),
      'TypeError',
      /options\.out\.dtype to be 'float32' but got 'int32'/,
    );
    expectError(
      () => layer.forwardSync(x, { out: new Float32Array(64) as never }),
      'TypeError',
      /options\.out to be a Tensor but got a Float32Array/,
    );
    expectError(() => layer.forwardSync(x, { out: x }), 'RangeError', /options\.out to share no memory with x but got overlapping arrays/);
    const both = new Float32Array(80);
    const overlapping = Tensor.from(both.subarray(16), [4, 16]);
    expectError(() => layer.forwardSync(Tensor.from(both.subarray(0, 64), [4, 16]), { out: overlapping }), 'RangeError', /share no memory/);
  });

  it('non-finite values in x, located', () => {
    const bad = Tensor.randn([4, 16], { seed: 3 });
    bad.data[2 * 16 + 5] = NaN;
    expectError(() => layer.forwardSync(bad), 'RangeError', /x to contain only finite values but got NaN at x\[2, 5\]/);
    bad.data[2 * 16 + 5] = -Infinity;
    expectError(() => layer.forwardSync(bad), 'RangeError', /got -Infinity at x\[2, 5\]/);
  });

  it('the async form rejects the same way, without running', async () => {
    await expect(layer.forward(Tensor.zeros([4, 12]))).rejects.toThrow(/expected x\.shape\[1\] = 16 \(dModel\) but got 12/);
  });

  it('a disposed layer', async () => {
    const l = new MoELayer(config, w);
    l.dispose();
    l.dispose(); // twice is fine
    expectError(() => l.forwardSync(x), 'TypeError', /a layer that is not disposed but got a disposed MoELayer/);
    await expect(l.forward(x)).rejects.toThrow(/disposed/);
  });

  it('`using` disposes a layer, packed experts and a read probe at the end of the scope', () => {
    let escaped: { layer?: MoELayer; packed?: kernels.PackedExperts; probe?: ReadProbe } = {};
    {
      using l = new MoELayer(config, w);
      using packed = new kernels.PackedExperts({ w1: w.w1, w3: w.w3, w2: w.w2 });
      using probe = new ReadProbe(2 ** 20);
      expect(l.forwardSync(x).output.shape).toEqual([4, 16]);
      escaped = { layer: l, packed, probe };
    }
    expect(escaped.layer!.disposed).toBe(true);
    expect(escaped.packed!.disposed).toBe(true);
    expectError(() => escaped.probe!.measure(1), 'TypeError', /a disposed ReadProbe/);
  });

  it('inputs are not modified', () => {
    const copy = Float32Array.from(x.data);
    layer.forwardSync(x);
    expect(x.data).toEqual(copy);
  });
});

describe('MoELayer refuses bad configs and weights', () => {
  const w = randomWeights(c, 4);
  it('k < 1 or k > E', () => {
    expectError(
      () => new MoELayer({ ...config, topK: 5 }, w),
      'RangeError',
      /config\.topK \(numExperts = 4\) to be an integer in \[1, 4\] but got 5/,
    );
    expectError(() => new MoELayer({ ...config, topK: 0 }, w), 'RangeError', /config\.topK/);
    expectError(() => new MoELayer({ ...config, topK: 1.5 }, w), 'RangeError', /config\.topK/);
  });
  it('bad sizes, activation, threads', () => {
    expectError(() => new MoELayer({ ...config, dModel: 0 }, w), 'RangeError', /config\.dModel/);
    expectError(
      () => new MoELayer({ ...config, dModel: '16' as never }, w),
      'TypeError',
      /config\.dModel to be an integer but got a string/,
    );
    expectError(() => new MoELayer({ ...config, activation: 'tanh' as never }, w), 'RangeError', /config\.activation to be one of/);
    expectError(() => new MoELayer({ ...config, threads: 1000 }, w), 'RangeError', /config\.threads/);
    expectError(() => new MoELayer(null as never, w), 'TypeError', /config to be an object but got null/);
  });
  it('weights of the wrong shape or dtype', () => {
    expectError(() => new MoELayer({ ...config, dModel: 17 }, w), 'RangeError', /weights\.router\.shape\[1\] = 17 \(dModel\) but got 16/);
    expectError(
      () => new MoELayer(config, { ...w, w2: Tensor.zeros([4, 24, 16]) }),
      'RangeError',
      /weights\.w2\.shape\[1\] = 16 \(dModel\) but got 24/,
    );
    expectError(() => new MoELayer(config, { ...w, w1: Tensor.zeros([4, 24, 16], 'int8') }), 'TypeError', /weights\.w1\.dtype/);
    expectError(() => new MoELayer(config, { ...w, b2: Tensor.zeros([4, 15]) }), 'RangeError', /weights\.b2\.shape\[1\] = 16/);
    expectError(() => new MoELayer(config, { ...w, router: {} as never }), 'TypeError', /weights\.router to be a Tensor but got an object/);
  });
  it('w3 missing for a gated activation, refused for a plain one', () => {
    expectError(
      () => new MoELayer(config, { ...w, w3: undefined }),
      'TypeError',
      /weights\.w3 to be a Tensor \[4, 24, 16\] \(required by the gated activation 'swiglu'\) but got undefined/,
    );
    expectError(
      () => new MoELayer({ ...config, activation: 'relu' }, w),
      'RangeError',
      /no weights\.w3 \(activation 'relu' is not gated\)/,
    );
  });
  it('non-finite weights', () => {
    const bad = Tensor.randn([4, 24, 16], { seed: 9 });
    bad.data[100] = NaN;
    expectError(() => new MoELayer(config, { ...w, w1: bad }), 'RangeError', /w1 to contain only finite values but got NaN/);
  });
  it('float16 / bfloat16 weights are accepted and converted exactly', () => {
    const toBf16 = (t: Tensor) => {
      const f = t.data as Float32Array;
      const bits = new Uint32Array(f.buffer, f.byteOffset, f.length);
      return Tensor.from(
        Uint16Array.from(bits, (b) => b >>> 16),
        t.shape,
        'bfloat16',
      );
    };
    const bf = { ...w, w1: toBf16(w.w1), w3: toBf16(w.w3!), w2: toBf16(w.w2), router: toBf16(w.router) };
    const asF32 = { ...w, w1: bf.w1.toFloat32(), w3: bf.w3.toFloat32(), w2: bf.w2.toFloat32(), router: bf.router.toFloat32() };
    const x = Tensor.randn([3, 16], { seed: 1 });
    expect(Array.from(new MoELayer(config, bf).forwardSync(x).output.data)).toEqual(
      Array.from(new MoELayer(config, asF32).forwardSync(x).output.data),
    );
  });
});

describe('kernels and backend refuse bad input', () => {
  it('topK', () => {
    const logits = Tensor.randn([3, 4], { seed: 1 });
    expectError(() => kernels.topK(logits, 5), 'RangeError', /k to be an integer in \[1, 4\] but got 5/);
    expectError(() => kernels.topK(logits, 0), 'RangeError', /k to be an integer/);
    const bad = Tensor.randn([3, 4], { seed: 1 });
    bad.data[5] = NaN;
    expectError(() => kernels.topK(bad, 2), 'RangeError', /logits to contain only finite values but got NaN at logits\[1, 1\]/);
  });
  it('dispatch', () => {
    expectError(() => kernels.dispatch([0, 1] as never, 4), 'TypeError', /experts to be an Int32Array but got an Array/);
    expectError(() => kernels.dispatch(Int32Array.from([0, 4]), 4), 'RangeError', /experts\[1\] in \[-1, 3\] \(-1 = dropped\) but got 4/);
    expectError(() => kernels.dispatch(Int32Array.from([0, -2]), 4), 'RangeError', /experts\[1\]/);
  });
  it('expertFFN with a corrupt plan or disposed experts', () => {
    const w = randomWeights(c, 5);
    const packed = new kernels.PackedExperts(w);
    const x = Tensor.randn([4, 16], { seed: 6 });
    const plan = kernels.dispatch(Int32Array.from([0, 1, 2, 3, 0, 1, 2, 3]), 4);
    const order = Int32Array.from(plan.order);
    order[3] = 99;
    expectError(() => kernels.expertFFN(x, packed, { ...plan, order }, 2), 'RangeError', /order\[3\] in \[0, 7\] but got 99/);
    const offsets = Int32Array.from(plan.expertOffsets);
    offsets[2] = 1;
    expectError(
      () => kernels.expertFFN(x, packed, { ...plan, expertOffsets: offsets }, 2),
      'RangeError',
      /expertOffsets to be non-decreasing/,
    );
    expectError(() => kernels.expertFFN(x, packed, plan, 3), 'RangeError', /order to have 12 elements but got 8/);
    packed.dispose();
    expectError(() => kernels.expertFFN(x, packed, plan, 2), 'TypeError', /not disposed/);
  });
  it('combine and routerLogits', () => {
    expectError(
      () => kernels.combine(Tensor.zeros([6, 4]), new Float32Array(5), 2),
      'RangeError',
      /weights\.length = 6 \(slots\) but got 5/,
    );
    expectError(() => kernels.combine(Tensor.zeros([5, 4]), new Float32Array(5), 2), 'RangeError', /positive multiple of topK = 2/);
    expectError(
      () => kernels.routerLogits(Tensor.zeros([2, 4]), Tensor.zeros([3, 5])),
      'RangeError',
      /router\.shape\[1\] = 4 \(dModel\) but got 5/,
    );
  });
  it('setThreads', () => {
    expectError(() => setThreads(0), 'RangeError', /threads to be an integer in \[1, 256\] but got 0/);
  });
});
