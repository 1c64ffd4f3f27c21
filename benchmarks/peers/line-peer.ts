/**
 * A benchmark peer in another process, spoken to one JSON object per line (torch_moe.py's protocol, which
 * ggml_moe.cpp's serve mode follows too): the inputs go by file, the timings come back measured inside the peer.
 */
import { ChildProcessWithoutNullStreams } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as readline from 'readline';

export interface PeerMoE {
  /** Hands the inputs (each `tokens` rows) to the peer, for the runs that follow. */
  load(inputs: Float32Array[], tokens: number): Promise<void>;
  /**
   * Runs `reps` forwards, cycling through the loaded inputs from `first`; returns each one's milliseconds
   * (measured inside the peer). The output of the last goes to `outputFile` when given.
   */
  run(first: number, reps: number, outputFile?: string): Promise<number[]>;
  close(): void;
  /** The peer's first line: its version and settings. */
  hello: Record<string, unknown>;
}

/** Waits for the peer's first line, then serves load and run requests; `inputFile` is where inputs are written. */
export async function linePeer(child: ChildProcessWithoutNullStreams, name: string, inputFile: string): Promise<PeerMoE> {
  const lines = readline.createInterface({ input: child.stdout });
  const iterator = lines[Symbol.asyncIterator]();
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const next = async (): Promise<Record<string, unknown>> => {
    const r = await iterator.next();
    if (r.done) throw new Error(`${name} exited: ${stderr.slice(-2000)}`);
    return JSON.parse(r.value);
  };
  const hello = await next();
  return {
    hello,
    async load(inputs, tokens) {
      fs.writeFileSync(inputFile, Buffer.concat(inputs.map((x) => Buffer.from(x.buffer, x.byteOffset, x.byteLength))));
      child.stdin.write(JSON.stringify({ cmd: 'load', x: inputFile, tokens, inputs: inputs.length }) + '\n');
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

/** The weights as float32 files in `folder` (router, w1, w3, w2), written once per folder. */
export function writeWeightFiles(folder: string, w: Record<'router' | 'w1' | 'w3' | 'w2', { data: ArrayBufferView }>): void {
  for (const [name, t] of Object.entries(w)) {
    const file = path.join(folder, `${name}.f32`);
    if (!fs.existsSync(file)) fs.writeFileSync(file, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
}
