/**
 * The CUDA backend from TypeScript. Without a device these tests say why and check the errors; with one they
 * compare the GPU layer with the CPU layer (bf16 weights: about 1e-2 relative).
 */
import { MoELayer, Tensor, backendInfo } from '../lib';
import { expectError, randomWeights, relativeError } from './helpers';

const { cuda } = backendInfo();
const withDevice = cuda.compiled && cuda.devices > 0 ? it : it.skip;
if (!(cuda.compiled && cuda.devices > 0))
  console.log(`CUDA tests skipped: ${cuda.compiled ? 'compiled, but no device' : 'not compiled'} (${cuda.reason})`);

describe('CUDA backend', () => {
  const c = { tokens: 65, dModel: 48, dHidden: 80, numExperts: 8, topK: 2, activation: 'swiglu' as const, bias: true };
  const config = { dModel: 48, dHidden: 80, numExperts: 8, topK: 2 };

  it('backendInfo reports whether it is compiled and how many devices there are', () => {
    expect(typeof cuda.compiled).toBe('boolean');
    expect(cuda.devices).toBeGreaterThanOrEqual(0);
    if (cuda.devices === 0) expect(cuda.reason).toBeTruthy();
  });

  it("asking for 'cuda' without a build or a device is a clear error; 'auto' falls back to the CPU", () => {
    const w = randomWeights(c, 1);
    if (cuda.devices === 0) {
      const why = cuda.compiled
        ? /no device/
        : /build without CUDA: build it where nvcc is installed with `node node_modules\/moe-kernels\/scripts\/build-native.js --cuda`/;
      expectError(() => new MoELayer({ ...config, backend: 'cuda' }, w), 'RangeError', why);
    }
    const auto = new MoELayer({ ...config, backend: 'auto' }, w);
    expect(auto.config.backend).toBe(cuda.devices > 0 && cuda.compiled ? 'cuda' : 'cpu');
    expectError(() => new MoELayer({ ...config, backend: 'tpu' as never }, w), 'RangeError', /config\.backend to be one of/);
  });

  withDevice('matches the CPU layer, sync and async, default and routed paths', async () => {
    const w = randomWeights(c, 2);
    const x = Tensor.randn([c.tokens, c.dModel], { seed: 3 });
    const cpu = new MoELayer(config, w).forwardSync(x);
    const gpuLayer = new MoELayer({ ...config, backend: 'cuda' }, w);
    const gpu = gpuLayer.forwardSync(x);
    expect(Array.from(gpu.routing.experts)).toEqual(Array.from(cpu.routing.experts));
    expect(relativeError(gpu.output.data, cpu.output.data)).toBeLessThan(2e-2);
    const again = await gpuLayer.forward(x);
    expect(Array.from(again.output.data)).toEqual(Array.from(gpu.output.data)); // deterministic
    const out = Tensor.zeros([c.tokens, c.dModel]);
    expect((await gpuLayer.forward(x, { out })).output).toBe(out);
    expect(Array.from(out.data)).toEqual(Array.from(gpu.output.data));
    const routed = new MoELayer({ ...config, backend: 'cuda', router: { kind: 'topK', capacityFactor: 0.5 } }, w).forwardSync(x);
    const routedCpu = new MoELayer({ ...config, router: { kind: 'topK', capacityFactor: 0.5 } }, w).forwardSync(x);
    expect(relativeError(routed.output.data, routedCpu.output.data)).toBeLessThan(2e-2);
  });
});
