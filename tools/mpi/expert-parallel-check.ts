/**
 * The expert-parallel layer against one process holding every expert (issue 20), run on every rank of an MPI job:
 *   mpirun -np 2 node dist/tools/mpi/expert-parallel-check.js      (scripts/test-mpi.sh runs it at 2 and 4 ranks)
 * Each rank builds, per case, the expert-parallel layer and the same layer whole (the same seed: the same weights),
 * runs its own tokens (a different count on each rank) through both and requires the outputs and routing to be
 * bitwise equal. Then one rank passes a bad input: it must get its own error, every other rank a RangeError saying
 * another rank failed, and the next forward must work everywhere. Exits 1 on any difference.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MoEConfig, MoELayer, Tensor, backendInfo } from '../../lib';
import { native } from '../../lib/native';
import { writeSyntheticCheckpoint } from '../synthetic-checkpoint';

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
  { name: 'soft routing (every expert, k = E)', config: { dModel: 24, dHidden: 16, numExperts: 4, router: { kind: 'soft' } } },
  { name: 'noisy top-k (inference: no noise)', config: { dModel: 24, dHidden: 16, numExperts: 8, topK: 2, router: { kind: 'noisyTopK' } } },
  {
    name: 'GShard top-2 with capacity',
    config: { dModel: 24, dHidden: 16, numExperts: 8, router: { kind: 'gshardTop2', capacityFactor: 1 } },
  },
  { name: 'expert choice', config: { dModel: 24, dHidden: 16, numExperts: 8, router: { kind: 'expertChoice', capacityFactor: 2 } } },
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

  // The backward: every rank can make every rank's inputs (seeded), so each compares its part with one process's
  // backward of all ranks' tokens in rank order: dx of its tokens, and the weight gradients of its experts (the other
  // experts' are zeros here: they stay on their owners).
  // (the first three forward cases, and one where rank 0 has no tokens of its own)
  const BACKWARD: (Case & { idleRank0?: boolean })[] = [
    ...CASES.slice(0, 3),
    { name: 'rank 0 without tokens', config: { dModel: 24, dHidden: 16, numExperts: 4, topK: 2 }, idleRank0: true },
  ];
  for (const [i, c] of BACKWARD.entries()) {
    const slices = c.slices ? c.slices(size, c.config.numExperts) : true;
    const ep = MoELayer.random({ ...c.config, expertParallel: slices }, { seed: 50 + i, bias: c.bias });
    const whole = MoELayer.random(c.config, { seed: 50 + i, bias: c.bias });
    // (No rank with a single token, nor 12n + 1 in all: a GEMM block of one row sums in another order, so a token
    // alone differs in its last bits from the same token among others, in any single process too.)
    const counts = Array.from({ length: size }, (_, q) =>
      c.idleRank0 ? (q === 0 ? 0 : [5, 29, 6][(q - 1) % 3]) : [2, 29, 6, 64][(q + i) % 4],
    );
    const xs = counts.map((t, q) => Tensor.randn([t, c.config.dModel], { seed: 1000 + 10 * q + i }));
    const gs = counts.map((t, q) => Tensor.randn([t, c.config.dModel], { seed: 2000 + 10 * q + i }));
    const epOut = ep.forwardSync(xs[rank]);
    const mine = i % 2 === 1 ? await ep.backwardAsync(xs[rank], epOut, gs[rank]) : ep.backward(xs[rank], epOut, gs[rank]);
    const concat = (ts: Tensor[]) =>
      Tensor.from(Float32Array.from(ts.flatMap((t) => Array.from(t.data as Float32Array))), [
        counts.reduce((a, b) => a + b, 0),
        c.config.dModel,
      ]);
    const X = concat(xs);
    const ref = whole.backward(X, whole.forwardSync(X), concat(gs));
    const d = c.config.dModel;
    const before = counts.slice(0, rank).reduce((a, b) => a + b, 0);
    const problems: string[] = [];
    if (!same(mine.dx.data, (ref.dx.data as Float32Array).subarray(before * d, (before + counts[rank]) * d))) problems.push('dx');
    const e = c.config.numExperts;
    const { first, count } = native().startMpi({ numExperts: e, slices: slices === true ? undefined : slices }); // this rank's experts
    for (const key of ['w1', 'w3', 'w2', 'b1', 'b3', 'b2'] as const) {
      const got = mine[key]?.data as Float32Array | undefined;
      const want = ref[key]?.data as Float32Array | undefined;
      if (!got || !want) continue;
      const per = want.length / e;
      const [lo, hi] = [first * per, (first + count) * per];
      if (!same(got.subarray(lo, hi), want.subarray(lo, hi))) problems.push(key);
      if (got.subarray(0, lo).some((v) => v !== 0) || got.subarray(hi).some((v) => v !== 0)) problems.push(`${key} (others' experts)`);
    }
    // One AdamW step each: this rank's experts bitwise as the single process's; the router (every rank's copy) by
    // the sum of the ranks' router gradients, added in rank order (the single process sums over all tokens at once).
    ep.step(mine, { kind: 'adamw', lr: 1e-3 });
    whole.step(ref, { kind: 'adamw', lr: 1e-3 });
    const [a, b] = [ep.exportWeights(), whole.exportWeights()];
    const per = (b.w1.data as Float32Array).length / e;
    const w1 = (w: typeof a) => (w.w1.data as Float32Array).subarray(first * per, (first + count) * per);
    if (!same(w1(a), w1(b))) problems.push('w1 after a step');
    const [ra, rb] = [a.router.data as Float32Array, b.router.data as Float32Array];
    const gap = Math.max(...ra.map((v, j) => Math.abs(v - rb[j])));
    if (!(gap < 1e-6)) problems.push(`the router after a step (off by ${gap})`);
    if (problems.length > 0) failures++;
    log(
      `${problems.length === 0 ? 'ok  ' : 'FAIL'} backward, ${c.name} (${i % 2 === 1 ? 'async' : 'sync'}) and an AdamW step: ${counts[rank]} of ` +
        `${counts.join('+')} tokens, ${problems.length === 0 ? `bitwise equal (router within ${gap.toExponential(1)})` : `differ: ${problems.join(', ')}`}`,
    );
    ep.dispose();
    whole.dispose();
  }

  // fromPretrained: each rank reads only its slice of a (synthetic, Mixtral-layout) checkpoint, and computes as the
  // layer loaded whole does.
  {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `moe-ep-ckpt-${rank}-`));
    try {
      await writeSyntheticCheckpoint(dir, { dModel: 64, dHidden: 48, experts: 8, topK: 2, layers: 1, seed: 7 });
      let partBytes = 0;
      let wholeBytes = 0;
      const part = await MoELayer.fromPretrained(dir, { expertParallel: true, onProgress: (p) => (partBytes = p.bytesRead) });
      const whole = await MoELayer.fromPretrained(dir, { onProgress: (p) => (wholeBytes = p.bytesRead) });
      const x = Tensor.randn([TOKENS[(rank + 1) % TOKENS.length] || 3, 64], { seed: 70 + rank });
      const equal = same(part.forwardSync(x).output.data, whole.forwardSync(x).output.data);
      const slice = backendInfo().mpi.size > 1 ? partBytes < wholeBytes : partBytes === wholeBytes;
      if (!equal || !slice) failures++;
      log(
        `${equal && slice ? 'ok  ' : 'FAIL'} fromPretrained with expertParallel: read ${partBytes} of the layer's ${wholeBytes} bytes, ` +
          `${equal ? 'bitwise equal' : 'outputs differ'}`,
      );
      part.dispose();
      whole.dispose();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
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
