/**
 * The expert-parallel layer against one process holding every expert (issue 20), run on every rank of an MPI job:
 *   mpirun -np 2 node dist/tools/mpi/expert-parallel-check.js      (scripts/test-mpi.sh runs it at 2 and 4 ranks)
 * Each rank builds, per case, the expert-parallel layer and the same layer whole (the same seed: the same weights),
 * runs its own tokens (a different count on each rank) through both and requires the outputs and routing to be
 * bitwise equal. Then one rank passes a bad input: it must get its own error, every other rank a RangeError saying
 * another rank failed, and the next forward must work everywhere. Exits 1 on any difference.
 */
import { MoEConfig, MoELayer, Tensor, backendInfo } from '../../lib';

interface Case {
  name: string;
  config: MoEConfig;
  bias?: boolean;
  slices?: (size: number, experts: number) => number[];
}

const CASES: Case[] = [
  { name: 'swiglu, top-2 of 8, even slices', config: { dModel: 40, dHidden: 24, numExperts: 8, topK: 2 } },
  {
    name: 'relu with biases, k = E = 5 (uneven)',
    config: { dModel: 33, dHidden: 17, numExperts: 5, topK: 5, activation: 'relu' },
    bias: true,
  },
  {
    name: 'every expert on rank 0 (the others own none)',
    config: { dModel: 24, dHidden: 16, numExperts: 6, topK: 2 },
    slices: (size, e) => [e, ...new Array<number>(size - 1).fill(0)],
  },
  {
    name: 'every expert on the last rank',
    config: { dModel: 24, dHidden: 16, numExperts: 6, topK: 1 },
    slices: (size, e) => [...new Array<number>(size - 1).fill(0), e],
  },
  { name: 'bfloat16 weights', config: { dModel: 64, dHidden: 48, numExperts: 8, topK: 2, weightDtype: 'bfloat16' } },
  { name: 'int8 weights, groups of 32', config: { dModel: 64, dHidden: 64, numExperts: 6, topK: 2, weightDtype: 'int8' } },
  {
    name: 'int4 weights, one scale per row',
    config: { dModel: 64, dHidden: 32, numExperts: 4, topK: 2, weightDtype: 'int4', groupSize: 'row' },
  },
  {
    name: 'switch routing with capacity (dropped slots)',
    config: { dModel: 32, dHidden: 24, numExperts: 8, router: { kind: 'switch', capacityFactor: 0.5 } },
  },
  {
    name: 'DeepSeek-V3 sigmoid + bias, shared experts',
    config: { dModel: 32, dHidden: 16, numExperts: 8, topK: 2, router: { kind: 'sigmoidBias' }, sharedExperts: 1 },
  },
  { name: 'gpt-oss clamped SwiGLU', config: { dModel: 32, dHidden: 32, numExperts: 4, topK: 2, activation: 'swiglu-clamped' }, bias: true },
];

const TOKENS = [1, 37, 0, 128, 3, 64, 0, 19]; // zeros: a rank without tokens still serves its experts

function same(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

async function main(): Promise<number> {
  // The first expert-parallel layer starts MPI; rank and size are known after it.
  const probe = MoELayer.random({ dModel: 8, dHidden: 8, numExperts: 2, topK: 1, expertParallel: true }, { seed: 1 });
  probe.dispose();
  const { rank, size } = backendInfo().mpi;
  const log = (line: string) => process.stdout.write(`[rank ${rank}/${size}] ${line}\n`);
  let failures = 0;
  for (const [i, c] of CASES.entries()) {
    const slices = c.slices ? c.slices(size, c.config.numExperts) : true;
    const ep = MoELayer.random({ ...c.config, expertParallel: slices }, { seed: 10 + i, bias: c.bias });
    const whole = MoELayer.random(c.config, { seed: 10 + i, bias: c.bias });
    const tokens = TOKENS[(rank + i) % TOKENS.length];
    const x = Tensor.randn([tokens, c.config.dModel], { seed: 100 * rank + i });
    const asyncForward = i % 2 === 1; // the async forward (MPI on the job thread) for every other case
    const got = asyncForward ? await ep.forward(x) : ep.forwardSync(x);
    // (a layer that is not expert-parallel takes no empty batch: a rank without tokens gets an empty output)
    const equal =
      tokens === 0
        ? got.output.shape[0] === 0 && got.output.shape[1] === c.config.dModel
        : ((want) => same(got.output.data, want.output.data) && same(got.routing.experts, want.routing.experts))(whole.forwardSync(x));
    if (!equal) failures++;
    log(
      `${equal ? 'ok  ' : 'FAIL'} ${c.name}: ${tokens} tokens, ${asyncForward ? 'async' : 'sync'}, ${equal ? (tokens === 0 ? 'an empty output' : 'bitwise equal') : 'outputs differ'}`,
    );
    ep.dispose();
    whole.dispose();
  }

  // A bad input on the last rank: its own error there, "another rank" everywhere else, then a good forward works.
  const config: MoEConfig = { dModel: 16, dHidden: 8, numExperts: 4, topK: 2, expertParallel: true };
  const layer = MoELayer.random(config, { seed: 3 });
  const bad = rank === size - 1;
  try {
    layer.forwardSync(bad ? Tensor.randn([4, 15], { seed: 1 }) : Tensor.randn([4, 16], { seed: 1 }));
    failures++;
    log("FAIL a bad input on one rank: this rank's forward returned");
  } catch (e) {
    const message = (e as Error).message;
    const expected = bad ? /x/ : /another rank/;
    if (!expected.test(message)) failures++;
    log(`${expected.test(message) ? 'ok  ' : 'FAIL'} a bad input on rank ${size - 1}: ${(e as Error).name}: ${message}`);
  }
  const after = layer.forwardSync(Tensor.randn([3, 16], { seed: 2 + rank }));
  const finite = after.output.data.every(Number.isFinite);
  if (!finite) failures++;
  log(`${finite ? 'ok  ' : 'FAIL'} the next forward after the failure`);
  layer.dispose();
  log(failures === 0 ? 'all checks passed' : `${failures} checks failed`);
  return failures === 0 ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    console.error(e);
    process.exitCode = 1;
  },
);
