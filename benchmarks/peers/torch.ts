/** Drives benchmarks/peers/torch_moe.py (Debian's python3-torch) as a long-lived child process. */
import { ChildProcessWithoutNullStreams, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as readline from 'readline';
import { MoEWeights } from '../../lib';

export interface TorchMoE {
  /** Hands the inputs (each `tokens` rows) to the Python side, for the runs that follow. */
  load(inputs: Float32Array[], tokens: number): Promise<void>;
  /**
   * Runs `reps` forwards, cycling through the loaded inputs from `first`; returns each one's milliseconds
   * (measured inside Python). The output of the last goes to `outputFile` when given.
   */
  run(first: number, reps: number, outputFile?: string): Promise<number[]>;
  close(): void;
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
  for (const [name, t] of Object.entries({ router: w.router, w1: w.w1, w3: w.w3!, w2: w.w2 })) {
    const file = path.join(folder, `${name}.f32`);
    if (!fs.existsSync(file)) fs.writeFileSync(file, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
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
  const lines = readline.createInterface({ input: child.stdout });
  const iterator = lines[Symbol.asyncIterator]();
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const next = async (): Promise<Record<string, unknown>> => {
    const r = await iterator.next();
    if (r.done) throw new Error(`torch_moe.py exited: ${stderr.slice(-2000)}`);
    return JSON.parse(r.value);
  };
  const hello = await next();
  const xFile = path.join(folder, `x-${dtype}.f32`);
  return {
    version: String(hello.torch),
    dtype,
    async load(inputs, tokens) {
      fs.writeFileSync(xFile, Buffer.concat(inputs.map((x) => Buffer.from(x.buffer, x.byteOffset, x.byteLength))));
      child.stdin.write(JSON.stringify({ cmd: 'load', x: xFile, tokens, inputs: inputs.length }) + '\n');
      await next();
    },
    async run(first, reps, outputFile) {
      child.stdin.write(JSON.stringify({ cmd: 'run', first, reps, out: outputFile ?? null }) + '\n');
      return (await next()).times_ms as number[];
    },
    close() {
      child.stdin.end();
      child.kill();
    },
  };
}

export function tempFolder(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'moe-bench-'));
}
