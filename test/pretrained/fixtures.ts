/**
 * Tiny seeded checkpoints, one per family and layout, with each family's real tensor names, dtypes and config keys,
 * written with safetensors.save. Every tensor is also kept as the float64 values it stores (decoded independently
 * of the library's decoders), for the float64 reference blocks in hf-reference.ts.
 */
import { promises as fs } from 'fs';
import * as path from 'path';
import { safetensors } from '../../lib';
import { Random } from '../../lib/random';

export type Stored = { shape: number[]; values: Float64Array };
export type Tensors = Map<string, Stored>;

export interface Fixture {
  dir: string;
  config: Record<string, unknown>;
  /** Every tensor as the values it stores. */
  tensors: Tensors;
}

type Dtype = 'F32' | 'BF16' | 'F16';

/** Values rounded to what a dtype stores, and the bytes it writes. */
function encode(values: Float64Array, dtype: Dtype): { data: ArrayBufferView; stored: Float64Array } {
  if (dtype === 'F32') {
    const f = Float32Array.from(values);
    return { data: f, stored: Float64Array.from(f) };
  }
  const bits = new Uint16Array(values.length);
  const stored = new Float64Array(values.length);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < values.length; i++) {
    if (dtype === 'BF16') {
      f[0] = values[i];
      bits[i] = ((u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16) & 0xffff;
      u[0] = bits[i] << 16;
      stored[i] = f[0];
    } else {
      // float16: the nearest multiple of the step at v's binade (2^-24 below the normal range).
      const v = values[i];
      const e = Math.max(-14, Math.floor(Math.log2(Math.abs(v) || 1)));
      const q = 2 ** (e - 10);
      stored[i] = Math.round(v / q) * q;
      bits[i] = f16bits(stored[i]);
    }
  }
  return { data: bits, stored };
}

function f16bits(v: number): number {
  if (v === 0) return 0;
  const sign = v < 0 ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a < 2 ** -14) return sign | Math.round(a / 2 ** -24); // subnormal
  let e = Math.floor(Math.log2(a));
  let m = Math.round((a / 2 ** e - 1) * 1024);
  if (m === 1024) {
    e += 1;
    m = 0;
  }
  return sign | ((e + 15) << 10) | m;
}

/** Independent FP8 E4M3 decode (bias 7, subnormals, no infinities). */
export function decodeE4M3(b: number): number {
  const s = b & 0x80 ? -1 : 1;
  const e = (b >> 3) & 15;
  const m = b & 7;
  return e === 0 ? (s * m) / 512 : s * 2 ** (e - 7) * (1 + m / 8);
}

export class Builder {
  readonly files = new Map<string, Record<string, { dtype: string; shape: number[]; data: ArrayBufferView }>>();
  readonly tensors: Tensors = new Map();
  private readonly rng: Random;
  constructor(seed: number) {
    this.rng = new Random(seed);
  }

  normal(n: number, std: number): Float64Array {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = std * this.rng.normal();
    return out;
  }

  /** A float tensor of random normal values in `dtype`, in shard `file`. */
  add(name: string, shape: number[], std: number, dtype: Dtype = 'BF16', file = 'model.safetensors', values?: Float64Array) {
    const n = shape.reduce((a, b) => a * b, 1);
    const { data, stored } = encode(values ?? this.normal(n, std), dtype);
    this.put(file, name, dtype, shape, data);
    this.tensors.set(name, { shape, values: stored });
  }

  /** An FP8 E4M3 weight [rows, cols] with F32 block scales `_scale_inv` [ceil(rows / b), ceil(cols / b)]. */
  addFp8(name: string, rows: number, cols: number, block: number, std: number, file = 'model.safetensors') {
    const codes = new Uint8Array(rows * cols);
    for (let i = 0; i < codes.length; i++) {
      let c = this.rng.nextUint32() & 0xff;
      if ((c & 0x7f) === 0x7f) c ^= 1; // never NaN
      if (((c >> 3) & 15) > 9) c = (c & 0x87) | (9 << 3); // |v| < 2^3: like real checkpoints' range after scaling
      codes[i] = c;
    }
    const sr = Math.ceil(rows / block);
    const sc = Math.ceil(cols / block);
    const scales = new Float32Array(sr * sc);
    for (let i = 0; i < scales.length; i++) scales[i] = std * (0.1 + 0.05 * (this.rng.nextUint32() % 8));
    this.put(file, name, 'F8_E4M3', [rows, cols], codes);
    this.put(file, `${name}_scale_inv`, 'F32', [sr, sc], scales);
    const values = new Float64Array(rows * cols);
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < cols; j++)
        values[i * cols + j] = decodeE4M3(codes[i * cols + j]) * scales[Math.floor(i / block) * sc + Math.floor(j / block)];
    this.tensors.set(name, { shape: [rows, cols], values });
  }

  /** MXFP4 weights [E, out, in] as `_blocks` [E, out, in / 32, 16] and `_scales` [E, out, in / 32]. */
  addMxfp4(name: string, e: number, out: number, cols: number, file = 'model.safetensors') {
    const nb = cols / 32;
    const blocks = new Uint8Array(e * out * nb * 16);
    const scales = new Uint8Array(e * out * nb);
    for (let i = 0; i < blocks.length; i++) blocks[i] = this.rng.nextUint32() & 0xff;
    for (let i = 0; i < scales.length; i++) scales[i] = 120 + (this.rng.nextUint32() % 3); // 2^-7 .. 2^-5
    this.put(file, `${name}_blocks`, 'U8', [e, out, nb, 16], blocks);
    this.put(file, `${name}_scales`, 'U8', [e, out, nb], scales);
    const fp4 = [0, 0.5, 1, 1.5, 2, 3, 4, 6];
    const values = new Float64Array(e * out * cols);
    for (let blk = 0; blk < scales.length; blk++)
      for (let j = 0; j < 32; j++) {
        const byte = blocks[blk * 16 + (j >> 1)];
        const nib = j & 1 ? byte >> 4 : byte & 15;
        values[blk * 32 + j] = (nib & 8 ? -1 : 1) * fp4[nib & 7] * 2 ** (scales[blk] - 127);
      }
    this.tensors.set(name, { shape: [e, out, cols], values });
  }

  private put(file: string, name: string, dtype: string, shape: number[], data: ArrayBufferView) {
    if (!this.files.has(file)) this.files.set(file, {});
    this.files.get(file)![name] = { dtype, shape, data };
  }

  /** Writes the shards, an index when there are several, and config.json. */
  async write(dir: string, config: Record<string, unknown>): Promise<Fixture> {
    await fs.mkdir(dir, { recursive: true });
    for (const [file, tensors] of this.files) await safetensors.save(path.join(dir, file), tensors, { format: 'pt' });
    if (this.files.size > 1 || ![...this.files.keys()].includes('model.safetensors')) {
      const weight_map: Record<string, string> = {};
      for (const [file, tensors] of this.files) for (const name of Object.keys(tensors)) weight_map[name] = file;
      await fs.writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map }));
    }
    await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify(config, null, 1));
    return { dir, config, tensors: this.tensors };
  }
}

export const D = 64; // hidden_size
export const H = 96; // expert intermediate size (a multiple of 32: MXFP4 blocks, int4 groups)
export const E = 8;

function denseMlp(b: Builder, prefix: string, hidden: number, file?: string) {
  b.add(`${prefix}.gate_proj.weight`, [hidden, D], 1 / 8, 'BF16', file);
  b.add(`${prefix}.up_proj.weight`, [hidden, D], 1 / 8, 'BF16', file);
  b.add(`${prefix}.down_proj.weight`, [D, hidden], 1 / 10, 'BF16', file);
}

function experts(b: Builder, prefix: string, names: [string, string, string], file?: string, dtype: Dtype = 'BF16') {
  for (let e = 0; e < E; e++) {
    b.add(`${prefix}.${e}.${names[0]}.weight`, [H, D], 1 / 8, dtype, file);
    b.add(`${prefix}.${e}.${names[1]}.weight`, [H, D], 1 / 8, dtype, file);
    b.add(`${prefix}.${e}.${names[2]}.weight`, [D, H], 1 / 10, dtype, file);
  }
}

/** Every fixture: name -> writer. Layer numbers are those of the MoE layer the tests load. */
export const FIXTURES: Record<string, { layer: number; make: (dir: string, seed: number) => Promise<Fixture> }> = {
  // Per-expert layout, sharded over two files with an index.
  mixtral: {
    layer: 1,
    make: async (dir, seed) => {
      const b = new Builder(seed);
      for (let l = 0; l < 2; l++) {
        const file = `model-0000${l + 1}-of-00002.safetensors`;
        b.add(`model.layers.${l}.block_sparse_moe.gate.weight`, [E, D], 1 / 8, 'BF16', file);
        experts(b, `model.layers.${l}.block_sparse_moe.experts`, ['w1', 'w3', 'w2'], file);
      }
      b.add('model.embed_tokens.weight', [32, D], 1, 'BF16', 'model-00001-of-00002.safetensors');
      return b.write(dir, {
        model_type: 'mixtral',
        hidden_size: D,
        intermediate_size: H,
        num_local_experts: E,
        num_experts_per_tok: 2,
        num_hidden_layers: 2,
        hidden_act: 'silu',
      });
    },
  },
  // transformers' stacked layout: gate_up_proj [E, 2I, H] (gate rows first), down_proj [E, H, I]; F32.
  'mixtral-stacked': {
    layer: 0,
    make: async (dir, seed) => {
      const b = new Builder(seed);
      b.add('model.layers.0.mlp.gate.weight', [E, D], 1 / 8, 'F32');
      b.add('model.layers.0.mlp.experts.gate_up_proj', [E, 2 * H, D], 1 / 8, 'F32');
      b.add('model.layers.0.mlp.experts.down_proj', [E, D, H], 1 / 10, 'F32');
      return b.write(dir, {
        model_type: 'mixtral',
        hidden_size: D,
        intermediate_size: H,
        num_local_experts: E,
        num_experts_per_tok: 2,
        num_hidden_layers: 1,
      });
    },
  },
  'qwen2-moe': {
    layer: 1,
    make: async (dir, seed) => {
      const b = new Builder(seed);
      denseMlp(b, 'model.layers.0.mlp', 128);
      b.add('model.layers.1.mlp.gate.weight', [E, D], 1 / 8);
      experts(b, 'model.layers.1.mlp.experts', ['gate_proj', 'up_proj', 'down_proj']);
      denseMlp(b, 'model.layers.1.mlp.shared_expert', 160);
      b.add('model.layers.1.mlp.shared_expert_gate.weight', [1, D], 1 / 8);
      return b.write(dir, {
        model_type: 'qwen2_moe',
        hidden_size: D,
        intermediate_size: 128,
        moe_intermediate_size: H,
        shared_expert_intermediate_size: 160,
        num_experts: E,
        num_experts_per_tok: 3,
        norm_topk_prob: false,
        decoder_sparse_step: 1,
        mlp_only_layers: [0],
        num_hidden_layers: 2,
        hidden_act: 'silu',
      });
    },
  },
  'qwen3-moe': {
    layer: 1,
    make: async (dir, seed) => {
      const b = new Builder(seed);
      denseMlp(b, 'model.layers.0.mlp', 128);
      b.add('model.layers.1.mlp.gate.weight', [E, D], 1 / 8, 'F16');
      experts(b, 'model.layers.1.mlp.experts', ['gate_proj', 'up_proj', 'down_proj'], undefined, 'F16');
      return b.write(dir, {
        model_type: 'qwen3_moe',
        hidden_size: D,
        moe_intermediate_size: H,
        num_experts: E,
        num_experts_per_tok: 2,
        norm_topk_prob: true,
        decoder_sparse_step: 2,
        mlp_only_layers: [],
        num_hidden_layers: 2,
      });
    },
  },
  'deepseek-v2': {
    layer: 1,
    make: async (dir, seed) => {
      const b = new Builder(seed);
      denseMlp(b, 'model.layers.0.mlp', 128);
      b.add('model.layers.1.mlp.gate.weight', [E, D], 1 / 8);
      experts(b, 'model.layers.1.mlp.experts', ['gate_proj', 'up_proj', 'down_proj']);
      denseMlp(b, 'model.layers.1.mlp.shared_experts', 2 * H);
      return b.write(dir, {
        model_type: 'deepseek_v2',
        hidden_size: D,
        intermediate_size: 128,
        moe_intermediate_size: H,
        n_routed_experts: E,
        n_shared_experts: 2,
        num_experts_per_tok: 3,
        first_k_dense_replace: 1,
        moe_layer_freq: 1,
        n_group: 4,
        topk_group: 2,
        topk_method: 'group_limited_greedy',
        scoring_func: 'softmax',
        routed_scaling_factor: 16,
        norm_topk_prob: false,
        num_hidden_layers: 2,
      });
    },
  },
  // FP8 E4M3 experts and shared experts with 32 x 32 block scales (DeepSeek-V3 uses 128; the fixture is smaller).
  'deepseek-v3': {
    layer: 2,
    make: async (dir, seed) => {
      const b = new Builder(seed);
      for (const l of [0, 1]) denseMlp(b, `model.layers.${l}.mlp`, 128);
      b.add('model.layers.2.mlp.gate.weight', [E, D], 1 / 8);
      b.add('model.layers.2.mlp.gate.e_score_correction_bias', [E], 0.05, 'F32');
      for (let e = 0; e < E; e++) {
        b.addFp8(`model.layers.2.mlp.experts.${e}.gate_proj.weight`, H, D, 32, 1 / 8);
        b.addFp8(`model.layers.2.mlp.experts.${e}.up_proj.weight`, H, D, 32, 1 / 8);
        b.addFp8(`model.layers.2.mlp.experts.${e}.down_proj.weight`, D, H, 32, 1 / 10);
      }
      b.addFp8('model.layers.2.mlp.shared_experts.gate_proj.weight', H, D, 32, 1 / 8);
      b.addFp8('model.layers.2.mlp.shared_experts.up_proj.weight', H, D, 32, 1 / 8);
      b.addFp8('model.layers.2.mlp.shared_experts.down_proj.weight', D, H, 32, 1 / 10);
      return b.write(dir, {
        model_type: 'deepseek_v3',
        hidden_size: D,
        intermediate_size: 128,
        moe_intermediate_size: H,
        n_routed_experts: E,
        n_shared_experts: 1,
        num_experts_per_tok: 3,
        first_k_dense_replace: 2,
        moe_layer_freq: 1,
        n_group: 4,
        topk_group: 2,
        topk_method: 'noaux_tc',
        scoring_func: 'sigmoid',
        routed_scaling_factor: 2.5,
        norm_topk_prob: true,
        num_hidden_layers: 3,
        quantization_config: { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', weight_block_size: [32, 32] },
      });
    },
  },
  olmoe: {
    layer: 0,
    make: async (dir, seed) => {
      const b = new Builder(seed);
      b.add('model.layers.0.mlp.gate.weight', [E, D], 1 / 8);
      experts(b, 'model.layers.0.mlp.experts', ['gate_proj', 'up_proj', 'down_proj']);
      return b.write(dir, {
        model_type: 'olmoe',
        hidden_size: D,
        intermediate_size: H,
        num_experts: E,
        num_experts_per_tok: 2,
        norm_topk_prob: false,
        num_hidden_layers: 1,
      });
    },
  },
  // transformers' bf16 layout: gate_up_proj [E, H, 2I] (x @ W, gate and up interleaved by column), down_proj [E, I, H].
  'gpt-oss': {
    layer: 0,
    make: async (dir, seed) => {
      const b = new Builder(seed);
      b.add('model.layers.0.mlp.router.weight', [E, D], 1 / 8);
      b.add('model.layers.0.mlp.router.bias', [E], 0.1);
      b.add('model.layers.0.mlp.experts.gate_up_proj', [E, D, 2 * H], 1 / 4);
      b.add('model.layers.0.mlp.experts.gate_up_proj_bias', [E, 2 * H], 0.3);
      b.add('model.layers.0.mlp.experts.down_proj', [E, H, D], 1 / 10);
      b.add('model.layers.0.mlp.experts.down_proj_bias', [E, D], 0.1);
      return b.write(dir, gptOssConfig);
    },
  },
  // OpenAI's release: MXFP4 experts (blocks and scales, [out, in] layout, gate / up interleaved by row).
  'gpt-oss-mxfp4': {
    layer: 0,
    make: async (dir, seed) => {
      const b = new Builder(seed);
      b.add('model.layers.0.mlp.router.weight', [E, D], 1 / 8);
      b.add('model.layers.0.mlp.router.bias', [E], 0.1);
      b.addMxfp4('model.layers.0.mlp.experts.gate_up_proj', E, 2 * H, D);
      b.add('model.layers.0.mlp.experts.gate_up_proj_bias', [E, 2 * H], 0.3);
      b.addMxfp4('model.layers.0.mlp.experts.down_proj', E, D, H);
      b.add('model.layers.0.mlp.experts.down_proj_bias', [E, D], 0.1);
      return b.write(dir, gptOssConfig);
    },
  },
};

// A small swiglu_limit, so that the fixture's pre-activations really are clamped (gpt-oss ships 7.0).
const gptOssConfig = {
  model_type: 'gpt_oss',
  hidden_size: D,
  intermediate_size: H,
  num_local_experts: E,
  num_experts_per_tok: 3,
  num_hidden_layers: 1,
  swiglu_limit: 0.75,
};
