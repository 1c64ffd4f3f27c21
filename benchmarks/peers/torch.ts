/** Drives benchmarks/peers/torch_moe.py (Debian's python3-torch) as a long-lived child process. */
import { ChildProcessWithoutNullStreams, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MoEWeights } from '../../lib';
import { PeerMoE, linePeer, writeWeightFiles } from './line-peer';

export interface TorchMoE extends PeerMoE {
  version: string;
  /** The dtype of its weights and inputs. */
  dtype: 'float32' | 'bfloat16';
}

const PYTHON = '/usr/bin/python3';

/** Why PyTorch cannot be used here, or undefined when it can. */
export function torchUnavailable(): string | undefined {
  if (!fs.existsSync(PYTHON)) return `${PYTHON} not found`;
  const r = spawnSync(PYTHON, ['-c', 'import torch, numpy'], { encoding: 'utf8' });
  return r.status === 0 ? undefined : 'python3-torch is not installed (apt-get install python3-torch)';
}

export async function startTorch(
  config: { dModel: number; dHidden: number; numExperts: number; topK: number },
  w: MoEWeights,
  threads: number,
  folder: string,
  dtype: 'float32' | 'bfloat16' = 'float32',
): Promise<TorchMoE> {
  writeWeightFiles(folder, { router: w.router, w1: w.w1, w3: w.w3!, w2: w.w2 });
  const script = path.join(__dirname, '..', '..', '..', 'benchmarks', 'peers', 'torch_moe.py');
  const args = [script, folder, config.dModel, config.dHidden, config.numExperts, config.topK, threads, dtype].map(String);
  const child: ChildProcessWithoutNullStreams = spawn(PYTHON, args, {
    // Passive OpenMP and OpenBLAS waiting: spinning idle threads would steal the cores from the next implementation.
    env: {
      ...process.env,
      OMP_NUM_THREADS: String(threads),
      OPENBLAS_NUM_THREADS: String(threads),
      MKL_NUM_THREADS: String(threads),
      OMP_WAIT_POLICY: 'PASSIVE',
      GOMP_SPINCOUNT: '0',
      OPENBLAS_THREAD_TIMEOUT: '4',
      OPENBLAS_CORETYPE: undefined,
      OPENBLAS_L2_SIZE: undefined,
    },
  });
  const peer = await linePeer(child, 'torch_moe.py', path.join(folder, `x-${dtype}.f32`));
  return { ...peer, version: String(peer.hello.torch), dtype };
}

export function tempFolder(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'moe-bench-'));
}
