/**
 * What a caller does to its arguments while an async call is pending, or through internal handles, cannot
 * reach memory it does not own: inputs are copied before the call returns, `out` is written when the Promise
 * settles, plans are copied and checked, and native handles are checked for their class.
 */
import { MoELayer, ReadProbe, Tensor, kernels } from '../lib';

const config = { dModel: 64, dHidden: 96, numExperts: 8, topK: 2 };
const tokens = 40; // over the size that settles inline, so the work runs on the job thread

/** Transfers the buffer away (the caller's view is left detached) and returns where its memory went. */
function detach(buffer: ArrayBufferLike): ArrayBuffer {
  return structuredClone(buffer, { transfer: [buffer as ArrayBuffer] }) as ArrayBuffer;
}

describe('async inputs changed while the call is pending', () => {
  const layer = MoELayer.random(config, { seed: 1 });
  const x = Tensor.randn([tokens, 64], { seed: 2 });
  const want = layer.forwardSync(x).output.data;
  afterAll(() => layer.dispose());

  it('x detached right after forward() returns: the result is that of the x passed', async () => {
    const mine = Tensor.from(Float32Array.from(x.data), [tokens, 64]);
    const pending = layer.forward(mine);
    new Float32Array(detach(mine.data.buffer)).fill(NaN); // its memory now belongs to another owner, who writes
    expect(mine.data.length).toBe(0);
    expect((await pending).output.data).toEqual(want);
  });

  it('NaN written into x after the finiteness check does not reach the kernels', async () => {
    const mine = Tensor.from(Float32Array.from(x.data), [tokens, 64]);
    const pending = layer.forward(mine);
    mine.data.fill(NaN);
    expect((await pending).output.data).toEqual(want);
  });

  it('x on a resizable buffer shrunk to nothing while pending', async () => {
    const buffer = new (ArrayBuffer as unknown as new (n: number, o: object) => ArrayBuffer & { resize(n: number): void })(
      x.data.byteLength,
      { maxByteLength: x.data.byteLength * 2 },
    );
    const mine = Tensor.from(new Float32Array(buffer, 0, x.data.length), [tokens, 64]);
    mine.data.set(x.data);
    const pending = layer.forward(mine);
    buffer.resize(0);
    expect((await pending).output.data).toEqual(want);
  });

  it('out detached while pending: the Promise rejects in the error format, nothing is written anywhere', async () => {
    const out = Tensor.zeros([tokens, 64]);
    const pending = layer.forward(x, { out });
    detach(out.data.buffer);
    await expect(pending).rejects.toThrow(
      /^moe-kernels: expected out to keep its 2560 elements while the forward ran but got a detached or resized buffer$/,
    );
  });

  it('out left alone receives the result', async () => {
    const out = Tensor.zeros([tokens, 64]);
    const { output } = await layer.forward(x, { out });
    expect(output).toBe(out);
    expect(out.data).toEqual(want);
  });

  it('forwardRouted (a TypeScript router) with x changed while pending', async () => {
    const routed = MoELayer.random({ ...config, router: { kind: 'topK', order: 'topk-softmax' } }, { seed: 1 });
    const expected = routed.forwardSync(x).output.data;
    const mine = Tensor.from(Float32Array.from(x.data), [tokens, 64]);
    const pending = routed.forward(mine);
    mine.data.fill(NaN);
    expect((await pending).output.data).toEqual(expected);
    routed.dispose();
  });

  it('x in a SharedArrayBuffer, which another thread could write during the call, is read from a copy', () => {
    const shared = new Float32Array(new SharedArrayBuffer(x.data.byteLength));
    shared.set(x.data);
    expect(layer.forwardSync(Tensor.from(shared, [tokens, 64])).output.data).toEqual(want);
  });
});

describe('expertFFN plans', () => {
  const w = MoELayer.random(config, { seed: 3 });
  const packed = new kernels.PackedExperts({
    w1: Tensor.randn([8, 96, 64], { seed: 4, std: 0.1 }),
    w3: Tensor.randn([8, 96, 64], { seed: 5, std: 0.1 }),
    w2: Tensor.randn([8, 64, 96], { seed: 6, std: 0.1 }),
  });
  const x = Tensor.randn([tokens, 64], { seed: 7 });
  const routing = kernels.topK(kernels.routerLogits(x, Tensor.randn([8, 64], { seed: 8 })), 2);
  const plan = kernels.dispatch(routing.experts, 8);
  const want = kernels.expertFFN(x, packed, plan, 2).data;
  afterAll(() => {
    packed.dispose();
    w.dispose();
  });

  it('order overwritten after expertFFNAsync returns: the plan as passed is used', async () => {
    const mine = { ...plan, order: Int32Array.from(plan.order), expertOffsets: Int32Array.from(plan.expertOffsets) };
    const pending = kernels.expertFFNAsync(x, packed, mine, 2);
    mine.order.fill(1 << 30);
    mine.expertOffsets.fill(-5);
    expect((await pending).data).toEqual(want);
  });

  it('an order that lists a slot twice is refused (it would leave another slot unwritten)', () => {
    const repeated = Int32Array.from(plan.order);
    repeated[1] = repeated[0];
    expect(() => kernels.expertFFN(x, packed, { ...plan, order: repeated }, 2)).toThrow(
      new RegExp(`^moe-kernels: expected order to list each slot at most once but got slot ${repeated[0]} again at order\\[1\\]$`),
    );
  });

  it('rows of slots not in the plan are zero, even in a recycled result block', () => {
    for (let i = 0; i < 3; i++) kernels.expertFFN(x, packed, plan, 2); // fill the pool with non-zero blocks
    const partial = { ...plan, expertOffsets: Int32Array.from(plan.expertOffsets).fill(0) };
    partial.expertOffsets[8] = 0;
    const out = kernels.expertFFN(x, packed, partial, 2).data;
    expect(out.every((v) => v === 0)).toBe(true);
  });
});

describe('native handles are checked for their class', () => {
  it("a layer's or a probe's handle passed as packed experts is a TypeError", () => {
    const layer = MoELayer.random(config, { seed: 1 });
    const probe = new ReadProbe(2 ** 20);
    const x = Tensor.randn([1, 64], { seed: 2 });
    const plan = kernels.dispatch(new Int32Array([0, 1]), 8);
    for (const handle of [(layer as unknown as { handle: object }).handle, (probe as unknown as { handle: object }).handle, {}]) {
      const fake = Object.create(kernels.PackedExperts.prototype, {
        handle: { value: handle },
        dModel: { value: 64 },
        numExperts: { value: 8 },
      }) as kernels.PackedExperts;
      let caught: Error | undefined;
      try {
        kernels.expertFFN(x, fake, plan, 2);
      } catch (err) {
        caught = err as Error;
      }
      expect(caught?.name).toBe('TypeError');
      expect(caught?.message).toBe('moe-kernels: expected packed experts but got another object');
    }
    layer.dispose();
    probe.dispose();
  });

  it("a layer method called on a probe's handle is a TypeError (V8's own receiver check)", () => {
    const layer = MoELayer.random(config, { seed: 1 });
    const probe = new ReadProbe(2 ** 20);
    const layerHandle = (layer as unknown as { handle: { forwardSync: (...a: unknown[]) => unknown; dispose: () => void } }).handle;
    const probeHandle = (probe as unknown as { handle: object }).handle;
    for (const call of [
      () => layerHandle.forwardSync.call(probeHandle, { x: new Float32Array(64), tokens: 1 }),
      () => layerHandle.dispose.call({}),
    ]) {
      let caught: Error | undefined;
      try {
        call();
      } catch (err) {
        caught = err as Error;
      }
      expect(caught?.name).toBe('TypeError');
    }
    layer.dispose();
    probe.dispose();
  });
});
