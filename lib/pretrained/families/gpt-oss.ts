/**
 * gpt-oss (transformers models/gpt_oss): every layer is MoE. Router: logits = x W^T + b; top experts_per_token by
 * logit, softmax over those k logits (the 'topk-softmax' order). Experts have biases and the clamped SwiGLU
 * (alpha 1.702, limit swiglu_limit), with gate and up interleaved in one projection: gate_up_proj [E, H, 2 I]
 * used as x @ W (gate = even columns, up = odd ones) and down_proj [E, I, H]. OpenAI's release ships the expert
 * weights in MXFP4 instead (`*_blocks` [E, out, in / 32, 16] and `*_scales` [E, out, in / 32], already in the
 * [out, in] layout, gate and up interleaved by row), dequantized here on load.
 */
import { Family, ExpertSources, field, numLayers } from '../family';
import { MatrixData, mxfp4Rows, stackedBias, stackedTransposed, whole } from '../sources';

export const gptOss: Family = {
  name: 'gpt-oss',
  modelTypes: ['gpt_oss'],
  moeLayers: (config) => Array.from({ length: numLayers(config) }, (_, i) => i),
  plan(config, layer, has) {
    const dModel = field(config, 'hidden_size').integer(undefined, 1);
    const dHidden = field(config, 'intermediate_size').integer(undefined, 1);
    const numExperts = field(config, 'num_local_experts').integer(undefined, 1);
    // transformers' config says num_experts_per_tok; OpenAI's original config.json experts_per_token.
    const topK = field(config, config.num_experts_per_tok !== undefined ? 'num_experts_per_tok' : 'experts_per_token').integer(
      undefined,
      1,
    );
    const limit = field(config, 'swiglu_limit').number(7);
    const block = `model.layers.${layer}.mlp`;
    const memo = new Map<string, Promise<MatrixData>>();
    const gateUp = `${block}.experts.gate_up_proj`;
    const down = `${block}.experts.down_proj`;
    const mx = has(`${gateUp}_blocks`);
    const experts: ExpertSources = mx
      ? {
          count: numExperts,
          dHidden,
          w1: (e) => mxfp4Rows(gateUp, e, 2 * dHidden, dModel, 0, 2, 'gate rows of gate_up_proj', memo),
          w3: (e) => mxfp4Rows(gateUp, e, 2 * dHidden, dModel, 1, 2, 'up rows of gate_up_proj', memo),
          w2: (e) => mxfp4Rows(down, e, dModel, dHidden, 0, 1, 'down_proj', memo),
        }
      : {
          count: numExperts,
          dHidden,
          w1: (e) => stackedTransposed(gateUp, e, [numExperts, dModel, 2 * dHidden], 0, 2, 'gate columns of gate_up_proj', memo),
          w3: (e) => stackedTransposed(gateUp, e, [numExperts, dModel, 2 * dHidden], 1, 2, 'up columns of gate_up_proj', memo),
          w2: (e) => stackedTransposed(down, e, [numExperts, dHidden, dModel], 0, 1, 'down_proj', memo),
        };
    experts.b1 = stackedBias(`${gateUp}_bias`, [numExperts, 2 * dHidden], 0, 2, 'gate_up_proj_bias');
    experts.b3 = stackedBias(`${gateUp}_bias`, [numExperts, 2 * dHidden], 1, 2, 'gate_up_proj_bias');
    experts.b2 = stackedBias(`${down}_bias`, [numExperts, dModel], 0, 1, 'down_proj_bias');
    return {
      config: {
        dModel,
        dHidden,
        numExperts,
        topK,
        activation: 'swiglu-clamped',
        swigluAlpha: 1.702,
        swigluLimit: limit,
        router: { kind: 'topK', order: 'topk-softmax' },
      },
      router: whole(`${block}.router.weight`, [numExperts, dModel], 'router'),
      routerBias: whole(`${block}.router.bias`, [numExperts], 'router bias'),
      experts,
    };
  },
};
