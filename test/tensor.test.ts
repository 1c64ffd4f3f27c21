import { Tensor, halfToFloat } from '../lib';
import { expectError } from './helpers';

describe('Tensor', () => {
  it('wraps typed arrays without copying and infers the dtype', () => {
    const data = new Float32Array([1, 2, 3, 4, 5, 6]);
    const t = Tensor.from(data, [2, 3]);
    expect(t.dtype).toBe('float32');
    expect(t.data).toBe(data);
    expect(t.size).toBe(6);
    expect(t.shape).toEqual([2, 3]);
    expect(Tensor.from(new Int32Array(4), [4]).dtype).toBe('int32');
    expect(Tensor.from(new Int8Array(4), [2, 2]).dtype).toBe('int8');
    expect(Tensor.from(new Uint8Array(4), [4]).dtype).toBe('uint8');
    expect(Tensor.from([1, 2.5], [2]).data).toEqual(new Float32Array([1, 2.5]));
  });

  it('reshape shares the data and infers -1', () => {
    const t = Tensor.zeros([2, 6]);
    const r = t.reshape([3, -1]);
    expect(r.shape).toEqual([3, 4]);
    expect(r.data).toBe(t.data);
    expectError(() => t.reshape([5, -1]), 'RangeError', /a shape with 12 elements/);
    expectError(() => t.reshape([-1, -1]), 'RangeError', /at most one -1/);
  });

  it('randn is seeded and reproducible, with the requested std', () => {
    const a = Tensor.randn([10000], { seed: 5, std: 2 });
    const b = Tensor.randn([10000], { seed: 5, std: 2 });
    expect(Array.from(a.data)).toEqual(Array.from(b.data));
    const mean = a.data.reduce((s, v) => s + v, 0) / a.size;
    const std = Math.sqrt(a.data.reduce((s, v) => s + (v - mean) ** 2, 0) / a.size);
    expect(Math.abs(mean)).toBeLessThan(0.1);
    expect(std).toBeGreaterThan(1.9);
    expect(std).toBeLessThan(2.1);
    expect(Array.from(Tensor.randn([5], { seed: 6 }).data)).not.toEqual(Array.from(Tensor.randn([5], { seed: 5 }).data));
  });

  it('toFloat32 converts float16 and bfloat16 exactly', () => {
    // float16: 1, -2, 65504 (max), 2^-24 (smallest subnormal), inf, -0
    const half = Tensor.from(new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x8000]), [6], 'float16');
    expect(Array.from(half.toFloat32().data)).toEqual([1, -2, 65504, 2 ** -24, Infinity, -0]);
    expect(Number.isNaN(halfToFloat(0x7e00))).toBe(true);
    // bfloat16: 1, -3, 1.00781250 (1 + 2^-7)
    const bf = Tensor.from(new Uint16Array([0x3f80, 0xc040, 0x3f81]), [3], 'bfloat16');
    expect(Array.from(bf.toFloat32().data)).toEqual([1, -3, 1 + 2 ** -7]);
    const f = Tensor.zeros([2]);
    expect(f.toFloat32()).toBe(f);
  });

  it('refuses bad input in the one format', () => {
    expectError(() => Tensor.from(new Float32Array(5), [2, 3]), 'RangeError', /data to have 6 elements/);
    expectError(() => Tensor.from(new Uint16Array(2), [2]), 'TypeError', /dtype 'float16' or 'bfloat16'/);
    expectError(() => Tensor.from(new Float64Array(2), [2]), 'TypeError', /Float64Array/);
    expectError(() => Tensor.from(new Float32Array(2), [2], 'int32'), 'TypeError', /Int32Array/);
    expectError(() => Tensor.from('abc' as never, [3]), 'TypeError', /typed array/);
    expectError(() => Tensor.zeros([2, -1]), 'RangeError', /shape\[1\]/);
    expectError(() => Tensor.zeros([2], 'float64' as never), 'RangeError', /dtype to be one of/);
    expectError(() => Tensor.randn([2], { std: -1 }), 'RangeError', /options.std/);
  });
});
