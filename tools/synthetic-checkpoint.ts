/**
 * A synthetic Mixtral-layout checkpoint of any size, written tensor by tensor (never all in memory): seeded
 * random bf16 weights of nn.Linear scale, config.json, and shards of at most `shardBytes` with their index. For
 * the load benchmark, the memory test and `npm start -- --checkpoint` without a download.
 *   node dist/tools/synthetic-checkpoint.js DIR [--d-model 4096 --d-hidden 14336 --experts 8 --layers 1]
 */
import { promises as fs } from 'fs';
import * as path from 'path';
import { encodeHeader } from '../lib/safetensors/format';
import { FlagSpec, parseFlags, usage } from './flags';

export interface SyntheticShape {
  dModel: number;
  dHidden: number;
  experts: number;
  topK: number;
  layers: number;
  /** Bytes per shard file (default 2 GiB); tensors are never split. */
  shardBytes?: number;
  seed?: number;
}

/** Writes the checkpoint; returns the bytes of one layer's MoE tensors. */
export async function writeSyntheticCheckpoint(dir: string, s: SyntheticShape): Promise<number> {
  await fs.mkdir(dir, { recursive: true });
  const tensors: { name: string; shape: number[]; std: number }[] = [];
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.block_sparse_moe`;
    tensors.push({ name: `${p}.gate.weight`, shape: [s.experts, s.dModel], std: 1 / Math.sqrt(s.dModel) });
    for (let e = 0; e < s.experts; e++) {
      tensors.push({ name: `${p}.experts.${e}.w1.weight`, shape: [s.dHidden, s.dModel], std: 1 / Math.sqrt(s.dModel) });
      tensors.push({ name: `${p}.experts.${e}.w2.weight`, shape: [s.dModel, s.dHidden], std: 1 / Math.sqrt(s.dHidden) });
      tensors.push({ name: `${p}.experts.${e}.w3.weight`, shape: [s.dHidden, s.dModel], std: 1 / Math.sqrt(s.dModel) });
    }
  }
  const bytes = (t: { shape: number[] }) => t.shape.reduce((a, b) => a * b, 1) * 2;
  const limit = s.shardBytes ?? 2 ** 31;
  const shards: (typeof tensors)[] = [[]];
  let size = 0;
  for (const t of tensors) {
    if (size > 0 && size + bytes(t) > limit) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(t);
    size += bytes(t);
  }
  let state = (s.seed ?? 1) >>> 0 || 1;
  const weightMap: Record<string, string> = {};
  for (let i = 0; i < shards.length; i++) {
    const file =
      shards.length === 1
        ? 'model.safetensors'
        : `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
    const entries = shards[i].map((t) => ({ name: t.name, dtype: 'BF16' as const, shape: t.shape, byteLength: bytes(t) }));
    const header = encodeHeader(entries);
    const handle = await fs.open(path.join(dir, file), 'w');
    try {
      await handle.write(header, 0, header.length, 0);
      let at = header.length;
      for (const t of shards[i]) {
        weightMap[t.name] = file;
        // Uniform values of the tensor's std (xorshift32), rounded to bf16: fast, finite, seeded.
        const n = bytes(t) / 2;
        const chunk = new Uint16Array(Math.min(n, 1 << 22));
        const f = new Float32Array(1);
        const u = new Uint32Array(f.buffer);
        const scale = t.std * Math.sqrt(3) * 2 ** -31;
        for (let done = 0; done < n; done += chunk.length) {
          const m = Math.min(chunk.length, n - done);
          for (let j = 0; j < m; j++) {
            state ^= state << 13;
            state ^= state >>> 17;
            state ^= state << 5;
            f[0] = (state | 0) * scale;
            chunk[j] = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16;
          }
          await handle.write(new Uint8Array(chunk.buffer, 0, m * 2), 0, m * 2, at);
          at += m * 2;
        }
      }
    } finally {
      await handle.close();
    }
  }
  if (shards.length > 1)
    await fs.writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  const config = {
    architectures: ['MixtralForCausalLM'],
    model_type: 'mixtral',
    hidden_size: s.dModel,
    intermediate_size: s.dHidden,
    num_local_experts: s.experts,
    num_experts_per_tok: s.topK,
    num_hidden_layers: s.layers,
    hidden_act: 'silu',
    torch_dtype: 'bfloat16',
  };
  await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  return tensors.slice(0, 1 + 3 * s.experts).reduce((a, t) => a + bytes(t), 0);
}

const FLAGS: FlagSpec[] = [
  { name: 'd-model', help: 'hidden_size', default: 4096 },
  { name: 'd-hidden', help: 'intermediate_size', default: 14336 },
  { name: 'experts', help: 'num_local_experts', default: 8 },
  { name: 'top-k', help: 'num_experts_per_tok', default: 2 },
  { name: 'layers', help: 'num_hidden_layers', default: 1 },
  { name: 'shard-mb', help: 'MiB per shard', default: 2048 },
  { name: 'seed', help: 'seed', default: 1 },
  { name: 'help', help: 'show this help', default: false },
];

if (require.main === module) {
  const [dir, ...rest] = process.argv.slice(2);
  const f = parseFlags(rest, FLAGS);
  if (!dir || f.help) process.stdout.write(usage('node dist/tools/synthetic-checkpoint.js DIR [flags]', FLAGS));
  else
    writeSyntheticCheckpoint(dir, {
      dModel: Number(f['d-model']),
      dHidden: Number(f['d-hidden']),
      experts: Number(f.experts),
      topK: Number(f['top-k']),
      layers: Number(f.layers),
      shardBytes: Number(f['shard-mb']) * 2 ** 20,
      seed: Number(f.seed),
    }).then(
      (bytes) => console.log(`wrote ${dir}: ${(bytes / 2 ** 20).toFixed(1)} MiB per layer`),
      (err) => {
        console.error(err);
        process.exit(1);
      },
    );
}
