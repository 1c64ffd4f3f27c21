/**
 * OLMoE (transformers models/olmoe): every layer is MoE; router softmax over num_experts, top
 * num_experts_per_tok, renormalised only when norm_topk_prob (default false); experts SwiGLU with
 * intermediate_size.
 */
import { Family, expertSources, field, gatedActivation, numLayers } from '../family';
import { whole } from '../sources';

export const olmoe: Family = {
  name: 'olmoe',
  modelTypes: ['olmoe'],
  moeLayers: (config) => Array.from({ length: numLayers(config) }, (_, i) => i),
  plan(config, layer, has) {
    const dModel = field(config, 'hidden_size').integer(undefined, 1);
    const dHidden = field(config, 'intermediate_size').integer(undefined, 1);
    const numExperts = field(config, 'num_experts').integer(undefined, 1);
    const topK = field(config, 'num_experts_per_tok').integer(undefined, 1);
    const normalize = field(config, 'norm_topk_prob').boolean(false);
    const block = `model.layers.${layer}.mlp`;
    return {
      config: { dModel, dHidden, numExperts, topK, activation: gatedActivation(config), router: { kind: 'topK', normalize } },
      router: whole(`${block}.gate.weight`, [numExperts, dModel], 'router'),
      experts: expertSources(`${block}.experts`, { gate: 'gate_proj', up: 'up_proj', down: 'down_proj' }, numExperts, dModel, dHidden, has),
    };
  },
};
