// resolveConfig is pure: the config and the host facts it is given decide the result, and nothing is started or probed.
import { NO_CUDA, placeLayer, resolveConfig } from '../lib/layer-config';
import { backendInfo } from '../lib';

const base = { dModel: 8, dHidden: 12, numExperts: 4, topK: 2 };
const gpu = { cuda: { compiled: true, devices: 1 } };

describe('resolveConfig', () => {
  it('chooses the backend from the host facts it is given, not from this process', () => {
    expect(resolveConfig({ ...base, backend: 'cuda' }, gpu).backend).toBe('cuda');
    expect(resolveConfig({ ...base, backend: 'auto' }, gpu).backend).toBe('cuda');
    expect(resolveConfig({ ...base, backend: 'auto' }, NO_CUDA).backend).toBe('cpu');
    expect(() => resolveConfig({ ...base, backend: 'cuda' }, { cuda: { compiled: true, devices: 0, reason: 'no CUDA device' } })).toThrow(
      /moe-kernels: expected backend 'cuda' to have a CUDA build and a device but got no device \(no CUDA device\)/,
    );
  });

  it('resolves an expert-parallel config without starting MPI; placeLayer is what starts it', () => {
    const c = resolveConfig({ ...base, expertParallel: [1, 3] }, NO_CUDA);
    expect(c.expertParallel).toEqual([1, 3]);
    expect(c.expertSlice).toBeUndefined();
    expect(backendInfo().mpi.initialized).toBe(false);
    if (!backendInfo().mpi.compiled) expect(() => placeLayer(c)).toThrow(/expected a build with MPI for an expert-parallel layer/);
  });

  it('gives equal results for equal inputs and leaves the config as it was', () => {
    const config = { ...base, router: { kind: 'topK' as const, capacityFactor: 1.5 } };
    const copy = JSON.parse(JSON.stringify(config));
    expect(resolveConfig(config, NO_CUDA)).toEqual(resolveConfig(config, NO_CUDA));
    expect(config).toEqual(copy);
  });
});
