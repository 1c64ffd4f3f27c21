// The machine ceilings the benchmarks report shares of: plausible numbers, and the one error format.
import { ReadProbe, measureFmaPeak, measureReadBandwidth } from '../lib';

describe('machine ceilings', () => {
  it('measures a positive FMA peak', () => {
    const gflops = measureFmaPeak(1, 0.02);
    expect(Number.isFinite(gflops)).toBe(true);
    expect(gflops).toBeGreaterThan(0.1);
  });

  it('a read probe measures the same buffer again and again, with 1 or more threads', () => {
    const probe = new ReadProbe(4 * 2 ** 20);
    try {
      for (const threads of [1, 2]) {
        const gbps = probe.measure(threads, 2);
        expect(Number.isFinite(gbps)).toBe(true);
        expect(gbps).toBeGreaterThan(0.1);
      }
    } finally {
      probe.dispose();
    }
    expect(measureReadBandwidth(1, 2 ** 20, 1)).toBeGreaterThan(0.1);
  });

  it('rejects bad arguments and a disposed probe in the one error format', () => {
    expect(() => new ReadProbe(1000)).toThrow(/^moe-kernels: expected bytes to be an integer in \[1048576, /);
    const probe = new ReadProbe(2 ** 20);
    expect(() => probe.measure(0)).toThrow(RangeError);
    expect(() => probe.measure(1, 0)).toThrow(/^moe-kernels: expected passes to be an integer in \[1, 100\] but got/);
    probe.dispose();
    probe.dispose(); // twice is harmless
    expect(() => probe.measure(1)).toThrow(TypeError);
    expect(() => probe.measure(1)).toThrow('moe-kernels: expected a read probe that is not disposed but got a disposed ReadProbe');
  });
});
