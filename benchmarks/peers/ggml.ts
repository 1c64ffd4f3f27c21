/**
 * ggml (llama.cpp's tensor library) as a peer: benchmarks/peers/ggml/ggml_moe.cpp's serve mode, built from source by
 * `bash benchmarks/peers/ggml/build.sh` (optional; never a dependency). One process per weight type: f32, bf16,
 * q8_0 and q4_0, and with the harness's --kquants q4_k and q6_k (the CPU backend's repacked layout where it has one),
 * llama.cpp's MoE graph (mul_mat_id).
 */
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { MoEWeights } from '../../lib';
import { PeerMoE, linePeer, writeWeightFiles } from './line-peer';

export type GgmlType = 'f32' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_k' | 'q6_k';

/** The driver: MOE_GGML_PEER, or where build.sh puts it. */
export function ggmlBinary(): string {
  return process.env.MOE_GGML_PEER ?? path.join(__dirname, '..', '..', '..', 'build-ggml', 'ggml_moe');
}

/** Why ggml cannot be used here, or undefined when it can. */
export function ggmlUnavailable(): string | undefined {
  const bin = ggmlBinary();
  if (!fs.existsSync(bin)) return `${bin} not built (bash benchmarks/peers/ggml/build.sh)`;
  const r = spawnSync(bin, [], { encoding: 'utf8' });
  return r.status === 2 && /usage/.test(r.stderr) ? undefined : `${bin} does not run: ${r.stderr || r.error}`;
}

export async function startGgml(
  config: { dModel: number; dHidden: number; numExperts: number; topK: number },
  w: MoEWeights,
  threads: number,
  folder: string,
  type: GgmlType,
): Promise<PeerMoE & { type: GgmlType }> {
  writeWeightFiles(folder, { router: w.router, w1: w.w1, w3: w.w3!, w2: w.w2 });
  const args = ['serve', folder, config.dModel, config.dHidden, config.numExperts, config.topK, threads, type].map(String);
  // GOMP's default waiting: its threads spin a while after a graph (which keeps the barriers between a graph's ops
  // fast, as in llama.cpp), then sleep; the harness waits after each ggml block so that spin does not tax the next.
  const child = spawn(ggmlBinary(), args, { env: { ...process.env, OMP_NUM_THREADS: String(threads) } });
  const peer = await linePeer(child, `ggml_moe (${type})`, path.join(folder, `x-ggml-${type}.f32`));
  return { ...peer, type };
}
