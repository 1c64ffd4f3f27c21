/**
 * DeepSeek-V2 and V3 (transformers models/deepseek_v2, deepseek_v3; DeepSeek's own modeling_deepseek.py): layer i
 * is MoE when n_routed_experts is set, i >= first_k_dense_replace and i % moe_layer_freq == 0.
 * - V2 (scoring_func 'softmax'): softmax over experts; topk_method 'greedy' (plain top-k) or 'group_limited_greedy'
 *   (n_group groups scored by their largest probability, the topk_group best eligible); weights times
 *   routed_scaling_factor. With norm_topk_prob (and top-k > 1) DeepSeek's code renormalises and does not scale
 *   (transformers ignores norm_topk_prob for V2; every released V2 config has it false, where both agree).
 * - V3 (scoring_func 'sigmoid', topk_method 'noaux_tc'): sigmoid scores; selection on scores +
 *   e_score_correction_bias within the topk_group groups of largest top-2 sums; weights the unbiased scores,
 *   renormalised when norm_topk_prob, times routed_scaling_factor (the 'sigmoidBias' router).
 * n_shared_experts shared experts form one MLP of width n_shared_experts * moe_intermediate_size. FP8 checkpoints
 * (quantization_config.quant_method 'fp8') carry a weight_scale_inv per weight in blocks of weight_block_size.
 */
import { rangeError } from '../../errors';
import { RouterConfig } from '../../router-config';
import { Family, HfConfig, LayerPlan, expertSources, field, gatedActivation, mlpSources, numLayers } from '../family';
import { whole } from '../sources';

function moeLayers(config: HfConfig): number[] {
  const experts = field(config, 'n_routed_experts').integer(0, 0);
  const first = field(config, 'first_k_dense_replace').integer(0, 0);
  const freq = field(config, 'moe_layer_freq').integer(1, 1);
  return Array.from({ length: numLayers(config) }, (_, i) => i).filter((i) => experts > 0 && i >= first && i % freq === 0);
}

/** The FP8 block size of quantization_config, or undefined for a checkpoint in floats. */
function fp8Block(config: HfConfig): number | undefined {
  const q = config.quantization_config as { quant_method?: unknown; weight_block_size?: unknown } | undefined;
  if (!q || typeof q !== 'object') return undefined;
  if (q.quant_method !== 'fp8')
    throw rangeError(`config.json "quantization_config.quant_method" to be 'fp8' or absent`, JSON.stringify(q.quant_method));
  const b = q.weight_block_size;
  if (!Array.isArray(b) || b.length !== 2 || b[0] !== b[1] || !Number.isInteger(b[0]) || b[0] < 1)
    throw rangeError('config.json "quantization_config.weight_block_size" to be square blocks [n, n]', JSON.stringify(b));
  return b[0];
}

function plan(config: HfConfig, layer: number, has: (name: string) => boolean, v3: boolean): LayerPlan {
  const dModel = field(config, 'hidden_size').integer(undefined, 1);
  const dHidden = field(config, 'moe_intermediate_size').integer(undefined, 1);
  const numExperts = field(config, 'n_routed_experts').integer(undefined, 1);
  const topK = field(config, 'num_experts_per_tok').integer(undefined, 1);
  const scale = field(config, 'routed_scaling_factor').number(1);
  const normalize = field(config, 'norm_topk_prob').boolean(v3);
  const scoring = field(config, 'scoring_func').string(v3 ? 'sigmoid' : 'softmax');
  const method = field(config, 'topk_method').string(v3 ? 'noaux_tc' : 'greedy');
  const numGroups = field(config, 'n_group').integer(1, 1);
  const topKGroups = field(config, 'topk_group').integer(numGroups, 1);
  const block = `model.layers.${layer}.mlp`;
  const fp8 = fp8Block(config);
  let router: RouterConfig;
  let selectionBias: LayerPlan['selectionBias'];
  if (v3) {
    if (scoring !== 'sigmoid') throw rangeError(`config.json "scoring_func" to be 'sigmoid' for DeepSeek-V3`, `'${scoring}'`);
    if (method !== 'noaux_tc') throw rangeError(`config.json "topk_method" to be 'noaux_tc' for DeepSeek-V3`, `'${method}'`);
    router = { kind: 'sigmoidBias', numGroups, topKGroups, routeScale: scale, normalize };
    const biasName = `${block}.gate.e_score_correction_bias`;
    if (has(biasName)) selectionBias = whole(biasName, [numExperts], 'e_score_correction_bias');
  } else {
    if (scoring !== 'softmax') throw rangeError(`config.json "scoring_func" to be 'softmax' for DeepSeek-V2`, `'${scoring}'`);
    if (method !== 'greedy' && method !== 'group_limited_greedy')
      throw rangeError(`config.json "topk_method" to be 'greedy' or 'group_limited_greedy' for DeepSeek-V2`, `'${method}'`);
    const grouped = method === 'group_limited_greedy';
    const renormalize = normalize && topK > 1;
    router = {
      kind: 'topK',
      normalize: renormalize,
      routeScale: renormalize ? 1 : scale,
      ...(grouped ? { numGroups, topKGroups } : {}),
    };
  }
  const p: LayerPlan = {
    config: { dModel, dHidden, numExperts, topK, activation: gatedActivation(config), router },
    router: whole(`${block}.gate.weight`, [numExperts, dModel], 'router'),
    selectionBias,
    experts: expertSources(
      `${block}.experts`,
      { gate: 'gate_proj', up: 'up_proj', down: 'down_proj' },
      numExperts,
      dModel,
      dHidden,
      has,
      fp8,
    ),
  };
  const shared = field(config, 'n_shared_experts').integer(0, 0);
  if (shared > 0) {
    p.config = { ...p.config, sharedExperts: 1, sharedHidden: shared * dHidden };
    p.shared = mlpSources(`${block}.shared_experts`, dModel, shared * dHidden, fp8);
  }
  return p;
}

export const deepseekV2: Family = {
  name: 'deepseek-v2',
  modelTypes: ['deepseek_v2'],
  moeLayers,
  plan: (config, layer, has) => plan(config, layer, has, false),
};

export const deepseekV3: Family = {
  name: 'deepseek-v3',
  modelTypes: ['deepseek_v3'],
  moeLayers,
  plan: (config, layer, has) => plan(config, layer, has, true),
};
