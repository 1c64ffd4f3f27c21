/**
 * A safetensors fixture (test/pretrained/fixtures.ts) written again as the GGUF file llama.cpp's converter would make
 * of it: llama.cpp's tensor names, the experts stacked into blk.N.ffn_{gate,up,down}_exps (or kept per expert, as
 * older Mixtral files are, with `perExpert`), shared experts as *_shexp, and the metadata its loader reads. Every
 * tensor is written as F32 from the values the fixture stores, so both files hold the same weights.
 */
import { GgufMetadataInput } from '../../lib/gguf/save';
import { Tensor, gguf } from '../../lib';
import { Fixture, Stored } from '../pretrained/fixtures';

const f32 = (s: Stored, shape = s.shape) => Tensor.from(Float32Array.from(s.values), shape);

/** Rows [r0, r0 + rows) of each expert of a stacked [E, R, C] tensor, as [E, rows, C]. */
function rowsOf(s: Stored, r0: number, rows: number): Stored {
  const [e, r, c] = s.shape;
  const values = new Float64Array(e * rows * c);
  for (let x = 0; x < e; x++) values.set(s.values.subarray((x * r + r0) * c, (x * r + r0 + rows) * c), x * rows * c);
  return { shape: [e, rows, c], values };
}

/** Columns c0, c0 + step, ... of each expert of [E, K, N] (x @ W), transposed to [E, cols, K]. */
function columnsOf(s: Stored, c0: number, step: number): Stored {
  const [e, k, n] = s.shape;
  const cols = Math.floor((n - c0 + step - 1) / step);
  const values = new Float64Array(e * cols * k);
  for (let x = 0; x < e; x++)
    for (let j = 0; j < cols; j++) for (let i = 0; i < k; i++) values[(x * cols + j) * k + i] = s.values[(x * k + i) * n + c0 + j * step];
  return { shape: [e, cols, k], values };
}

/** Every `step`th value from c0 of each row of [E, n]. */
function biasOf(s: Stored, c0: number, step: number): Stored {
  const [e, n] = s.shape;
  const per = Math.floor((n - c0 + step - 1) / step);
  const values = new Float64Array(e * per);
  for (let x = 0; x < e; x++) for (let j = 0; j < per; j++) values[x * per + j] = s.values[x * n + c0 + j * step];
  return { shape: [e, per], values };
}

/** Experts e = 0.. of `${prefix}.${e}.${name}.weight` stacked into [E, rows, cols]. */
function stack(t: Map<string, Stored>, prefix: string, name: string): Stored {
  const parts: Stored[] = [];
  for (let e = 0; t.has(`${prefix}.${e}.${name}.weight`); e++) parts.push(t.get(`${prefix}.${e}.${name}.weight`)!);
  const [rows, cols] = parts[0].shape;
  const values = new Float64Array(parts.length * rows * cols);
  parts.forEach((p, e) => values.set(p.values, e * rows * cols));
  return { shape: [parts.length, rows, cols], values };
}

export async function writeGgufFixture(fx: Fixture, family: string, layer: number, file: string, perExpert = false): Promise<void> {
  const c = fx.config as Record<string, number | string | boolean>;
  const t = fx.tensors;
  const tensors: Record<string, Tensor> = {};
  const put = (name: string, s: Stored, shape?: number[]) => (tensors[name] = f32(s, shape));
  const blk = `blk.${layer}`;
  const u32 = (v: unknown) => ({ type: 'u32' as const, value: v as number });
  let arch: string;
  const meta: Record<string, GgufMetadataInput> = {};
  const mlp = `model.layers.${layer}.mlp`;
  const routed = (prefix: string, names: [string, string, string]) => {
    if (perExpert)
      for (let e = 0; t.has(`${prefix}.${e}.${names[0]}.weight`); e++)
        ['gate', 'up', 'down'].forEach((p, i) => put(`${blk}.ffn_${p}.${e}.weight`, t.get(`${prefix}.${e}.${names[i]}.weight`)!));
    else ['gate', 'up', 'down'].forEach((p, i) => put(`${blk}.ffn_${p}_exps.weight`, stack(t, prefix, names[i])));
  };
  const shared = (prefix: string) =>
    ['gate', 'up', 'down'].forEach((p) => put(`${blk}.ffn_${p}_shexp.weight`, t.get(`${prefix}.${p}_proj.weight`)!));
  switch (family) {
    case 'mixtral':
    case 'mixtral-stacked': {
      arch = 'llama';
      const legacy = `model.layers.${layer}.block_sparse_moe`;
      const block = t.has(`${legacy}.gate.weight`) ? legacy : mlp;
      put(`${blk}.ffn_gate_inp.weight`, t.get(`${block}.gate.weight`)!);
      if (t.has(`${block}.experts.gate_up_proj`)) {
        const gu = t.get(`${block}.experts.gate_up_proj`)!;
        const h = gu.shape[1] / 2;
        put(`${blk}.ffn_gate_exps.weight`, rowsOf(gu, 0, h));
        put(`${blk}.ffn_up_exps.weight`, rowsOf(gu, h, h));
        put(`${blk}.ffn_down_exps.weight`, t.get(`${block}.experts.down_proj`)!);
      } else routed(`${block}.experts`, ['w1', 'w3', 'w2']);
      Object.assign(meta, { 'llama.expert_count': u32(c.num_local_experts), 'llama.expert_used_count': u32(c.num_experts_per_tok) });
      meta['llama.feed_forward_length'] = u32(c.intermediate_size);
      break;
    }
    case 'qwen2-moe':
    case 'qwen3-moe':
    case 'olmoe': {
      arch = { 'qwen2-moe': 'qwen2moe', 'qwen3-moe': 'qwen3moe', olmoe: 'olmoe' }[family]!;
      put(`${blk}.ffn_gate_inp.weight`, t.get(`${mlp}.gate.weight`)!);
      routed(`${mlp}.experts`, ['gate_proj', 'up_proj', 'down_proj']);
      meta[`${arch}.expert_count`] = u32(c.num_experts);
      meta[`${arch}.expert_used_count`] = u32(c.num_experts_per_tok);
      meta[`${arch}.expert_feed_forward_length`] = u32(c.moe_intermediate_size ?? c.intermediate_size);
      if (family === 'qwen2-moe') {
        shared(`${mlp}.shared_expert`);
        const g = t.get(`${mlp}.shared_expert_gate.weight`)!;
        put(`${blk}.ffn_gate_inp_shexp.weight`, g, [g.shape[1]]); // llama.cpp's shape: [n_embd]
        meta['qwen2moe.expert_shared_feed_forward_length'] = u32(c.shared_expert_intermediate_size);
      }
      break;
    }
    case 'deepseek-v2':
    case 'deepseek-v3': {
      arch = 'deepseek2';
      const v3 = family === 'deepseek-v3';
      put(`${blk}.ffn_gate_inp.weight`, t.get(`${mlp}.gate.weight`)!);
      routed(`${mlp}.experts`, ['gate_proj', 'up_proj', 'down_proj']);
      shared(`${mlp}.shared_experts`);
      if (v3) put(`${blk}.exp_probs_b.bias`, t.get(`${mlp}.gate.e_score_correction_bias`)!);
      Object.assign(meta, {
        'deepseek2.expert_count': u32(c.n_routed_experts),
        'deepseek2.expert_used_count': u32(c.num_experts_per_tok),
        'deepseek2.expert_shared_count': u32(c.n_shared_experts),
        'deepseek2.expert_feed_forward_length': u32(c.moe_intermediate_size),
        'deepseek2.leading_dense_block_count': u32(c.first_k_dense_replace),
        'deepseek2.expert_weights_scale': { type: 'f32', value: c.routed_scaling_factor as number },
        'deepseek2.expert_weights_norm': c.norm_topk_prob as boolean,
        'deepseek2.expert_gating_func': u32(v3 ? 2 : 1),
        'deepseek2.expert_group_count': u32(c.n_group),
        'deepseek2.expert_group_used_count': u32(c.topk_group),
      });
      break;
    }
    case 'gpt-oss': {
      arch = 'gpt-oss';
      put(`${blk}.ffn_gate_inp.weight`, t.get(`${mlp}.router.weight`)!);
      put(`${blk}.ffn_gate_inp.bias`, t.get(`${mlp}.router.bias`)!);
      const gu = t.get(`${mlp}.experts.gate_up_proj`)!;
      put(`${blk}.ffn_gate_exps.weight`, columnsOf(gu, 0, 2));
      put(`${blk}.ffn_up_exps.weight`, columnsOf(gu, 1, 2));
      put(`${blk}.ffn_down_exps.weight`, columnsOf(t.get(`${mlp}.experts.down_proj`)!, 0, 1));
      const gub = t.get(`${mlp}.experts.gate_up_proj_bias`)!;
      put(`${blk}.ffn_gate_exps.bias`, biasOf(gub, 0, 2));
      put(`${blk}.ffn_up_exps.bias`, biasOf(gub, 1, 2));
      put(`${blk}.ffn_down_exps.bias`, t.get(`${mlp}.experts.down_proj_bias`)!);
      meta['gpt-oss.expert_count'] = u32(c.num_local_experts);
      meta['gpt-oss.expert_used_count'] = u32(c.num_experts_per_tok);
      meta['gpt-oss.expert_feed_forward_length'] = u32(c.intermediate_size);
      break;
    }
    default:
      throw new Error(`no GGUF mapping for fixture ${family}`);
  }
  meta['general.architecture'] = arch;
  meta[`${arch}.block_count`] = u32(c.num_hidden_layers);
  meta[`${arch}.embedding_length`] = u32(c.hidden_size);
  await gguf.save(file, { metadata: meta, tensors });
}
