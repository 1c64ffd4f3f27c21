/**
 * Mixtral (transformers models/mixtral): every decoder layer is MoE; router = softmax over num_local_experts,
 * top num_experts_per_tok, renormalised; experts SwiGLU (w1 gate, w3 up, w2 down). Older checkpoints name the block
 * `block_sparse_moe` with experts.N.w1/w2/w3; recent transformers save it as `mlp` with stacked
 * experts.gate_up_proj [E, 2 I, H] (gate rows first) and experts.down_proj [E, H, I].
 */
import { Family, expertSources, field, gatedActivation, numLayers } from '../family';
import { whole } from '../sources';

export const mixtral: Family = {
  name: 'mixtral',
  modelTypes: ['mixtral'],
  moeLayers: (config) => Array.from({ length: numLayers(config) }, (_, i) => i),
  plan(config, layer, has) {
    const dModel = field(config, 'hidden_size').integer(undefined, 1);
    const dHidden = field(config, 'intermediate_size').integer(undefined, 1);
    const numExperts = field(config, 'num_local_experts').integer(undefined, 1);
    const topK = field(config, 'num_experts_per_tok').integer(2, 1);
    const legacy = `model.layers.${layer}.block_sparse_moe`;
    const block = has(`${legacy}.gate.weight`) ? legacy : `model.layers.${layer}.mlp`;
    return {
      config: { dModel, dHidden, numExperts, topK, activation: gatedActivation(config), router: { kind: 'topK', normalize: true } },
      router: whole(`${block}.gate.weight`, [numExperts, dModel], 'router'),
      experts: expertSources(`${block}.experts`, { gate: 'w1', up: 'w3', down: 'w2' }, numExperts, dModel, dHidden, has),
    };
  },
};
