/**
 * Qwen2-MoE and Qwen3-MoE (transformers models/qwen2_moe, qwen3_moe): layer i is MoE when it is not in
 * mlp_only_layers, num_experts > 0 and (i + 1) % decoder_sparse_step == 0. Router: softmax over num_experts, top
 * num_experts_per_tok, renormalised only when norm_topk_prob (default false). Experts SwiGLU with
 * moe_intermediate_size. Qwen2-MoE adds one shared expert (shared_expert_intermediate_size) scaled per token by
 * sigmoid(shared_expert_gate(x)).
 */
import { Family, HfConfig, LayerPlan, expertSources, field, gatedActivation, mlpSources, numLayers } from '../family';
import { whole } from '../sources';

function moeLayers(config: HfConfig): number[] {
  const step = field(config, 'decoder_sparse_step').integer(1, 1);
  const dense = new Set(field(config, 'mlp_only_layers').integers([]));
  const experts = field(config, 'num_experts').integer(undefined, 0);
  return Array.from({ length: numLayers(config) }, (_, i) => i).filter((i) => !dense.has(i) && experts > 0 && (i + 1) % step === 0);
}

function plan(config: HfConfig, layer: number, has: (name: string) => boolean, sharedExpert: boolean): LayerPlan {
  const dModel = field(config, 'hidden_size').integer(undefined, 1);
  const dHidden = field(config, 'moe_intermediate_size').integer(undefined, 1);
  const numExperts = field(config, 'num_experts').integer(undefined, 1);
  const topK = field(config, 'num_experts_per_tok').integer(undefined, 1);
  const normalize = field(config, 'norm_topk_prob').boolean(false);
  const block = `model.layers.${layer}.mlp`;
  const p: LayerPlan = {
    config: { dModel, dHidden, numExperts, topK, activation: gatedActivation(config), router: { kind: 'topK', normalize } },
    router: whole(`${block}.gate.weight`, [numExperts, dModel], 'router'),
    experts: expertSources(`${block}.experts`, { gate: 'gate_proj', up: 'up_proj', down: 'down_proj' }, numExperts, dModel, dHidden, has),
  };
  if (sharedExpert && field(config, 'shared_expert_intermediate_size').integer(0, 0) > 0) {
    const sharedHidden = field(config, 'shared_expert_intermediate_size').integer(undefined, 1);
    p.config = { ...p.config, sharedExperts: 1, sharedHidden };
    p.shared = mlpSources(`${block}.shared_expert`, dModel, sharedHidden);
    p.sharedGate = whole(`${block}.shared_expert_gate.weight`, [1, dModel], 'shared expert gate');
  }
  return p;
}

export const qwen2Moe: Family = {
  name: 'qwen2-moe',
  modelTypes: ['qwen2_moe'],
  moeLayers,
  plan: (config, layer, has) => plan(config, layer, has, true),
};

export const qwen3Moe: Family = {
  name: 'qwen3-moe',
  modelTypes: ['qwen3_moe'],
  moeLayers,
  plan: (config, layer, has) => plan(config, layer, has, false),
};
