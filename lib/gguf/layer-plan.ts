/**
 * A GGUF file as a layer's source for MoELayer.fromPretrained: llama.cpp's metadata turned into the config.json the
 * family reads (so every rule of a family is written once, in lib/pretrained/families), then the family's plan with
 * its tensors taken from llama.cpp's names (src/llama-arch.cpp):
 *   blk.N.ffn_gate_inp.weight [E, D] (router; gpt-oss also .bias), blk.N.ffn_{gate,up,down}_exps.weight
 *   [E, I, D] / [E, D, I] (older Mixtral files: blk.N.ffn_{gate,up,down}.E.weight per expert), gpt-oss's
 *   blk.N.ffn_{gate,up,down}_exps.bias, shared experts blk.N.ffn_{gate,up,down}_shexp.weight and Qwen2-MoE's
 *   shared-expert gate blk.N.ffn_gate_inp_shexp.weight [D], DeepSeek-V3's selection bias blk.N.exp_probs_b.bias [E].
 * Metadata, per architecture `a` (general.architecture): a.block_count, a.embedding_length, a.feed_forward_length,
 * a.expert_feed_forward_length, a.expert_shared_feed_forward_length, a.expert_count, a.expert_used_count,
 * a.expert_shared_count, a.leading_dense_block_count, a.expert_weights_scale, a.expert_weights_norm,
 * a.expert_gating_func (1 softmax, 2 sigmoid), a.expert_group_count, a.expert_group_used_count.
 * Where llama.cpp and transformers disagree, the layer follows the model's own reference (what its safetensors
 * load does), and docs/gguf.md lists the differences: llama.cpp scores DeepSeek-V2's expert groups by their top-2
 * sum (V3's rule) where DeepSeek's V2 code takes the group's largest score, and clamps a renormalisation's sum at
 * 6.1e-5. Qwen3-MoE renormalises its top-k weights (llama.cpp always does; every Qwen3 config.json says so).
 */
import { rangeError } from '../errors';
import { ExpertSources, Family, HfConfig, LayerPlan } from '../pretrained/family';
import { MatrixData, MatrixSource, Reader, WholeSource } from '../pretrained/sources';
import { q3kToQ6k, q50ToQ80 } from './transcode';
import { dequantizeBlocks, toFloat32 } from './dequantize';
import { GgufFile, GgufTensorInfo } from './file';

/** The architectures (general.architecture) whose MoE layers the library reads. */
const ARCHITECTURES = ['llama', 'mixtral', 'qwen2moe', 'qwen3moe', 'olmoe', 'gpt-oss', 'deepseek2'];

/** The config.json a family would read, from a GGUF file's metadata. */
export function hfConfigOf(file: GgufFile): HfConfig {
  const arch = file.get('general.architecture');
  if (typeof arch !== 'string') throw rangeError(`${file.path} to have a general.architecture string`, String(arch));
  if (!ARCHITECTURES.includes(arch))
    throw rangeError(
      `${file.path} to be a GGUF file of an MoE architecture moe-kernels reads (llama / mixtral, qwen2moe, qwen3moe, deepseek2, olmoe, gpt-oss)`,
      `'${arch}'`,
    );
  const key = (k: string) => file.get(`${arch}.${k}`);
  const num = (k: string, fallback?: number): number | undefined => {
    const v = key(k);
    if (v === undefined) return fallback;
    if (typeof v !== 'number') throw rangeError(`${file.path}: metadata '${arch}.${k}' to be a number`, typeof v);
    return v;
  };
  // (the keys every MoE layer needs, named as the file spells them when missing, not as config.json's)
  const required = (k: string, value = num(k)): number => {
    if (value === undefined) throw rangeError(`${file.path} to have metadata '${arch}.${k}'`, 'none');
    return value;
  };
  const common = { num_hidden_layers: required('block_count'), hidden_size: required('embedding_length'), hidden_act: 'silu' };
  const experts = num('expert_count', 0)!;
  const topK = experts > 0 ? required('expert_used_count') : undefined;
  const expertHidden =
    experts > 0 ? required('expert_feed_forward_length', num('expert_feed_forward_length') ?? num('feed_forward_length')) : undefined;
  switch (arch) {
    case 'llama':
    case 'mixtral':
      if (experts === 0) throw rangeError(`${file.path} (${arch}) to be an MoE model (${arch}.expert_count > 0)`, 'a dense one');
      return { ...common, model_type: 'mixtral', intermediate_size: expertHidden, num_local_experts: experts, num_experts_per_tok: topK };
    case 'qwen2moe':
      return {
        ...common,
        model_type: 'qwen2_moe',
        moe_intermediate_size: expertHidden,
        num_experts: experts,
        num_experts_per_tok: topK,
        shared_expert_intermediate_size: num('expert_shared_feed_forward_length', 0),
        norm_topk_prob: false,
      };
    case 'qwen3moe':
      return {
        ...common,
        model_type: 'qwen3_moe',
        moe_intermediate_size: expertHidden,
        num_experts: experts,
        num_experts_per_tok: topK,
        norm_topk_prob: true,
      };
    case 'olmoe':
      return {
        ...common,
        model_type: 'olmoe',
        intermediate_size: expertHidden,
        num_experts: experts,
        num_experts_per_tok: topK,
        norm_topk_prob: false,
      };
    case 'gpt-oss':
      return {
        ...common,
        model_type: 'gpt_oss',
        intermediate_size: expertHidden,
        num_local_experts: experts,
        num_experts_per_tok: topK,
        swiglu_limit: 7,
      };
    case 'deepseek2': {
      const sigmoid = num('expert_gating_func', 1) === 2;
      const groups = num('expert_group_count', 1)!;
      const scale = num('expert_weights_scale', 1)!;
      const norm = key('expert_weights_norm');
      return {
        ...common,
        model_type: sigmoid ? 'deepseek_v3' : 'deepseek_v2',
        moe_intermediate_size: expertHidden,
        n_routed_experts: experts,
        num_experts_per_tok: topK,
        n_shared_experts: num('expert_shared_count', 0),
        first_k_dense_replace: num('leading_dense_block_count', 0),
        routed_scaling_factor: scale === 0 ? 1 : scale,
        norm_topk_prob: typeof norm === 'boolean' ? norm : sigmoid,
        scoring_func: sigmoid ? 'sigmoid' : 'softmax',
        topk_method: sigmoid ? 'noaux_tc' : groups > 1 ? 'group_limited_greedy' : 'greedy',
        n_group: groups,
        topk_group: num('expert_group_used_count', groups),
      };
    }
    default:
      throw rangeError(
        `${file.path} to be a GGUF file of an MoE architecture moe-kernels reads (llama / mixtral, qwen2moe, qwen3moe, deepseek2, olmoe, gpt-oss)`,
        `'${arch}'`,
      );
  }
}

/** Checks that `name` exists with `shape` (row-major); returns its info. */
function expect(file: GgufFile, name: string, shape: readonly number[], what: string): GgufTensorInfo {
  if (!file.has(name)) throw rangeError(`${file.path} to hold tensor '${name}' (${what})`, 'no such tensor');
  const info = file.info(name);
  // llama.cpp stores vectors as 1-D, and some writers add a leading 1: compare without leading ones.
  const strip = (s: readonly number[]) => s.slice(s.findIndex((d) => d !== 1) === -1 ? s.length - 1 : s.findIndex((d) => d !== 1));
  if (strip(info.shape).join(',') !== strip(shape).join(','))
    throw rangeError(`tensor '${name}' (${what}) of ${file.path} to have shape [${shape.join(', ')}]`, `[${info.shape.join(', ')}]`);
  return info;
}

/** A whole small tensor (router, biases) as float32. */
function whole(file: GgufFile, name: string, shape: readonly number[], what: string): WholeSource {
  return {
    name,
    async check() {
      return expect(file, name, shape, what).byteLength;
    },
    async read(reader: Reader) {
      const info = file.info(name);
      const values = shape.reduce((a, b) => a * b, 1);
      return toFloat32(info.type, await reader.rangeOf(file, name, 0, info.byteLength), values, `tensor '${name}' of ${file.path}`);
    },
  };
}

/** Rows [e * rows, (e + 1) * rows) of a [E, rows, cols] tensor, or a whole [rows, cols] one (e = 0). */
function matrix(file: GgufFile, name: string, e: number, shape: readonly number[], what: string): MatrixSource {
  const [rows, cols] = shape.slice(-2);
  return {
    rows,
    cols,
    async check() {
      const info = expect(file, name, shape, what);
      return (rows * cols * info.type.typeSize) / info.type.blockSize;
    },
    async read(reader: Reader): Promise<MatrixData> {
      const info = file.info(name);
      const bytes = (rows * cols * info.type.typeSize) / info.type.blockSize;
      const data = await reader.rangeOf(file, name, e * bytes, bytes);
      const t = info.type.name;
      if (t === 'F32') return { kind: 'float32', data: new Float32Array(data.buffer, data.byteOffset, rows * cols) };
      if (t === 'F16' || t === 'BF16')
        return {
          kind: 'half',
          format: t === 'F16' ? 'float16' : 'bfloat16',
          bits: new Uint16Array(data.buffer, data.byteOffset, rows * cols),
        };
      if (t === 'Q8_0' || t === 'Q4_0' || t === 'Q4_K' || t === 'Q5_K' || t === 'Q6_K') return { kind: 'blocks', type: t, data };
      // (rewritten without loss as a type the kernels take: transcode.ts)
      if (t === 'Q3_K') return { kind: 'blocks', type: 'Q6_K', data: q3kToQ6k(data) };
      if (t === 'Q5_0') return { kind: 'blocks', type: 'Q8_0', data: q50ToQ80(data) };
      return { kind: 'float32', data: dequantizeBlocks(info.type, data, rows * cols, `tensor '${name}' of ${file.path}`) };
    },
  };
}

/** The GGUF tensor behind an expert projection: stacked (`_exps`) or, in older Mixtral files, one per expert. */
function expertMatrix(file: GgufFile, layer: number, proj: 'gate' | 'up' | 'down', e: number, count: number, rows: number, cols: number) {
  const stacked = `blk.${layer}.ffn_${proj}_exps.weight`;
  if (file.has(stacked) || !file.has(`blk.${layer}.ffn_${proj}.0.weight`))
    return matrix(file, stacked, e, [count, rows, cols], `expert ${proj} projections`);
  return matrix(file, `blk.${layer}.ffn_${proj}.${e}.weight`, 0, [rows, cols], `expert ${e} ${proj} projection`);
}

function expertSources(file: GgufFile, layer: number, set: ExpertSources, suffix: 'exps' | 'shexp', dModel: number): ExpertSources {
  const { count, dHidden } = set;
  const pick = (proj: 'gate' | 'up' | 'down', e: number, rows: number, cols: number) =>
    suffix === 'exps'
      ? expertMatrix(file, layer, proj, e, count, rows, cols)
      : matrix(file, `blk.${layer}.ffn_${proj}_shexp.weight`, 0, [rows, cols], `shared expert ${proj} projection`);
  const out: ExpertSources = {
    count,
    dHidden,
    w1: (e) => pick('gate', e, dHidden, dModel),
    w3: (e) => pick('up', e, dHidden, dModel),
    w2: (e) => pick('down', e, dModel, dHidden),
  };
  if (set.b1) out.b1 = whole(file, `blk.${layer}.ffn_gate_exps.bias`, [count, dHidden], 'expert gate biases');
  if (set.b3) out.b3 = whole(file, `blk.${layer}.ffn_up_exps.bias`, [count, dHidden], 'expert up biases');
  if (set.b2) out.b2 = whole(file, `blk.${layer}.ffn_down_exps.bias`, [count, dModel], 'expert down biases');
  return out;
}

/** The GGUF types of a layer's expert weights, by tensor (for the load's default dtype and its conversions). */
export function expertTensorTypes(file: GgufFile, layer: number): { name: string; type: string }[] {
  const re = new RegExp(`^blk\\.${layer}\\.ffn_(gate|up|down)(_exps|_shexp|\\.\\d+)\\.weight$`);
  return file
    .names()
    .filter((n) => re.test(n))
    .map((name) => ({ name, type: file.info(name).type.name }));
}

/** The family's plan of MoE layer `layer`, its tensors read from the GGUF file. */
export function ggufPlan(file: GgufFile, family: Family, config: HfConfig, layer: number): LayerPlan {
  const bias = `blk.${layer}.exp_probs_b.bias`;
  // The family's own choice of layout asks `has` for transformers' names: the GGUF file has none of them but the
  // selection bias, whose presence the V3 plan checks.
  const plan = family.plan(config, layer, (name) => name.endsWith('.e_score_correction_bias') && file.has(bias));
  const { dModel, numExperts } = plan.config;
  const out: LayerPlan = {
    ...plan,
    router: whole(file, `blk.${layer}.ffn_gate_inp.weight`, [numExperts, dModel], 'router'),
    experts: expertSources(file, layer, plan.experts, 'exps', dModel),
  };
  if (plan.routerBias) out.routerBias = whole(file, `blk.${layer}.ffn_gate_inp.bias`, [numExperts], 'router bias');
  if (plan.selectionBias) out.selectionBias = whole(file, bias, [numExperts], 'expert selection bias (exp_probs_b)');
  if (plan.shared) out.shared = expertSources(file, layer, plan.shared, 'shexp', dModel);
  if (plan.sharedGate) out.sharedGate = whole(file, `blk.${layer}.ffn_gate_inp_shexp.weight`, [1, dModel], 'shared expert gate');
  return out;
}
