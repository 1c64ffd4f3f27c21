// resolveConfig is pure: the config and the host facts it is given decide the result, and nothing is started or
// probed; what a backend refuses comes from its table of capabilities, with one message.
import { Capabilities, capabilities } from '../lib/capabilities';
import { HostFacts, placeLayer, resolveConfig } from '../lib/layer-config';
import { backendInfo } from '../lib';

const base = { dModel: 8, dHidden: 12, numExperts: 4, topK: 2 };
const tables = (): Capabilities => capabilities();
const host = (devices: number, caps = tables()): HostFacts => ({ cuda: { compiled: devices > 0, devices }, capabilities: caps });

describe('resolveConfig', () => {
  it('chooses the backend from the host facts it is given, not from this process', () => {
    expect(resolveConfig({ ...base, backend: 'cuda' }, host(1)).backend).toBe('cuda');
    expect(resolveConfig({ ...base, backend: 'auto' }, host(1)).backend).toBe('cuda');
    expect(resolveConfig({ ...base, backend: 'auto' }, host(0)).backend).toBe('cpu');
    const noDevice = { ...host(0), cuda: { compiled: true, devices: 0, reason: 'no CUDA device' } };
    expect(() => resolveConfig({ ...base, backend: 'cuda' }, noDevice)).toThrow(
      /moe-kernels: expected backend 'cuda' to have a CUDA build and a device but got no device \(no CUDA device\)/,
    );
  });

  it('resolves an expert-parallel config without starting MPI; placeLayer is what starts it', () => {
    const c = resolveConfig({ ...base, expertParallel: [1, 3] }, host(0));
    expect(c.expertParallel).toEqual([1, 3]);
    expect(c.expertSlice).toBeUndefined();
    expect(backendInfo().mpi.initialized).toBe(false);
    if (!backendInfo().mpi.compiled) expect(() => placeLayer(c)).toThrow(/expected a build with MPI for an expert-parallel layer/);
  });

  it('gives equal results for equal inputs and leaves the config as it was', () => {
    const config = { ...base, router: { kind: 'topK' as const, capacityFactor: 1.5 } };
    const copy = JSON.parse(JSON.stringify(config));
    expect(resolveConfig(config, host(0))).toEqual(resolveConfig(config, host(0)));
    expect(config).toEqual(copy);
  });
});

describe('backend capabilities', () => {
  it("are the core's tables, one per backend, shown by backendInfo()", () => {
    const { backends, features } = backendInfo();
    expect(backends.cpu.offers).toEqual(expect.arrayContaining(['backward', 'sharedExperts', 'expertParallel']));
    expect(backends.cuda.offers).toEqual(['routeSoftmaxTopK', 'routeSigmoidBias']);
    for (const b of Object.values(backends)) for (const f of b.offers) expect(typeof features[f]).toBe('string');
  });

  // (native/tests/core_tests.cpp checks the core's refusal against this same text)
  it('decide what a config may ask of a backend, with one message', () => {
    const refusal = (what: string) =>
      new RegExp(
        `^moe-kernels: expected a backend that offers ${what} but got backend 'cuda' \\(it offers: routeSoftmaxTopK, routeSigmoidBias\\)$`,
      );
    expect(() => resolveConfig({ ...base, backend: 'cuda', sharedExperts: 1 }, host(1))).toThrow(refusal('shared experts'));
    expect(() => resolveConfig({ ...base, backend: 'cuda', expertParallel: true }, host(1))).toThrow(
      refusal('expert parallelism \\(config.expertParallel\\)'),
    );
    // The same config passes where the table says the backend offers it.
    const t = tables();
    const generous: Capabilities = {
      ...t,
      backends: { ...t.backends, cuda: { ...t.backends.cuda, offers: [...t.backends.cuda.offers, 'sharedExperts'] } },
    };
    expect(resolveConfig({ ...base, backend: 'cuda', sharedExperts: 1 }, host(1, generous)).sharedExperts).toBe(1);
  });
});
