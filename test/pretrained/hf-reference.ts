/**
 * Each family's MoE block in float64, written from its transformers modeling code against the checkpoint's own
 * tensor names and layouts, independently of the loader: the expected outputs of the fixture tests.
 */
import { Tensors } from './fixtures';

type Vec = Float64Array;
const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));
const silu = (z: number) => z * sigmoid(z);

function get(t: Tensors, name: string) {
  const v = t.get(name);
  if (!v) throw new Error(`fixture has no ${name}`);
  return v;
}

/** y = W x (+ b) for W [out, in] (nn.Linear). */
function linear(x: Vec, w: { shape: number[]; values: Vec }, b?: Vec, offset = 0): Vec {
  const [out, k] = w.shape.slice(-2);
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = b ? b[o] : 0;
    for (let i = 0; i < k; i++) s += w.values[offset + o * k + i] * x[i];
    y[o] = s;
  }
  return y;
}

function mlp(t: Tensors, prefix: string, x: Vec): Vec {
  const g = linear(x, get(t, `${prefix}.gate_proj.weight`));
  const u = linear(x, get(t, `${prefix}.up_proj.weight`));
  return linear(
    g.map((v, i) => silu(v) * u[i]),
    get(t, `${prefix}.down_proj.weight`),
  );
}

function softmax(l: Vec): Vec {
  const m = Math.max(...l);
  const e = l.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

/** Indices of the k largest (ties to the lower index, as torch.topk in practice), among `allowed`. */
function topk(v: ArrayLike<number>, k: number, allowed: (i: number) => boolean = () => true): number[] {
  const idx = Array.from({ length: v.length }, (_, i) => i).filter(allowed);
  idx.sort((a, b) => v[b] - v[a] || a - b);
  return idx.slice(0, k);
}

function addScaled(y: Vec, s: number, v: Vec) {
  for (let i = 0; i < y.length; i++) y[i] += s * v[i];
}

type Block = (t: Tensors, config: Record<string, number & string & boolean & number[]>, layer: number, x: Vec) => Vec;

const mixtral: Block = (t, c, l, x) => {
  const stacked = t.has(`model.layers.${l}.mlp.experts.gate_up_proj`);
  const p = stacked ? `model.layers.${l}.mlp` : `model.layers.${l}.block_sparse_moe`;
  const probs = softmax(linear(x, get(t, `${p}.gate.weight`)));
  const chosen = topk(probs, c.num_experts_per_tok);
  const sum = chosen.reduce((a, e) => a + probs[e], 0);
  const y = new Float64Array(x.length);
  for (const e of chosen) {
    let out: Vec;
    if (stacked) {
      const gu = get(t, `${p}.experts.gate_up_proj`);
      const [, two, d] = gu.shape;
      const h = linear(x, { shape: [two, d], values: gu.values }, undefined, e * two * d); // chunk(2): gate then up
      const I = two / 2;
      const act = new Float64Array(I).map((_, i) => silu(h[i]) * h[I + i]);
      const dn = get(t, `${p}.experts.down_proj`);
      out = linear(act, { shape: dn.shape.slice(1), values: dn.values }, undefined, e * dn.shape[1] * dn.shape[2]);
    } else {
      const g = linear(x, get(t, `${p}.experts.${e}.w1.weight`));
      const u = linear(x, get(t, `${p}.experts.${e}.w3.weight`));
      out = linear(
        g.map((v, i) => silu(v) * u[i]),
        get(t, `${p}.experts.${e}.w2.weight`),
      );
    }
    addScaled(y, probs[e] / sum, out);
  }
  return y;
};

function softmaxTopKBlock(shared: 'qwen2' | 'none'): Block {
  return (t, c, l, x) => {
    const p = `model.layers.${l}.mlp`;
    const probs = softmax(linear(x, get(t, `${p}.gate.weight`)));
    const chosen = topk(probs, c.num_experts_per_tok);
    const sum = c.norm_topk_prob ? chosen.reduce((a, e) => a + probs[e], 0) : 1;
    const y = new Float64Array(x.length);
    for (const e of chosen) addScaled(y, probs[e] / sum, mlp(t, `${p}.experts.${e}`, x));
    if (shared === 'qwen2') addScaled(y, sigmoid(linear(x, get(t, `${p}.shared_expert_gate.weight`))[0]), mlp(t, `${p}.shared_expert`, x));
    return y;
  };
}

const deepseekV2: Block = (t, c, l, x) => {
  const p = `model.layers.${l}.mlp`;
  const s = softmax(linear(x, get(t, `${p}.gate.weight`)));
  let allowed = (_: number) => true;
  if (c.topk_method === 'group_limited_greedy') {
    const per = s.length / c.n_group;
    const groupMax = Array.from({ length: c.n_group }, (_, g) => Math.max(...s.subarray(g * per, (g + 1) * per)));
    const keep = new Set(topk(groupMax, c.topk_group));
    allowed = (e) => keep.has(Math.floor(e / per));
  }
  const chosen = topk(s, c.num_experts_per_tok, allowed);
  const y = new Float64Array(x.length);
  for (const e of chosen) addScaled(y, s[e] * c.routed_scaling_factor, mlp(t, `${p}.experts.${e}`, x));
  addScaled(y, 1, mlp(t, `${p}.shared_experts`, x));
  return y;
};

const deepseekV3: Block = (t, c, l, x) => {
  const p = `model.layers.${l}.mlp`;
  const s = linear(x, get(t, `${p}.gate.weight`)).map(sigmoid);
  const bias = get(t, `${p}.gate.e_score_correction_bias`).values;
  const biased = s.map((v, i) => v + bias[i]);
  const per = s.length / c.n_group;
  const groupScore = Array.from({ length: c.n_group }, (_, g) =>
    topk(biased.subarray(g * per, (g + 1) * per), 2).reduce((a, i) => a + biased[g * per + i], 0),
  );
  const keep = new Set(topk(groupScore, c.topk_group));
  const chosen = topk(biased, c.num_experts_per_tok, (e) => keep.has(Math.floor(e / per)));
  const sum = c.norm_topk_prob ? chosen.reduce((a, e) => a + s[e], 0) : 1;
  const y = new Float64Array(x.length);
  for (const e of chosen) addScaled(y, (s[e] / sum) * c.routed_scaling_factor, mlp(t, `${p}.experts.${e}`, x));
  addScaled(y, 1, mlp(t, `${p}.shared_experts`, x));
  return y;
};

const gptOss: Block = (t, c, l, x) => {
  const p = `model.layers.${l}.mlp`;
  const logits = linear(x, get(t, `${p}.router.weight`), get(t, `${p}.router.bias`).values);
  const chosen = topk(logits, c.num_experts_per_tok);
  const w = softmax(Float64Array.from(chosen, (e) => logits[e]));
  const gu = get(t, `${p}.experts.gate_up_proj`);
  const dn = get(t, `${p}.experts.down_proj`);
  const guBias = get(t, `${p}.experts.gate_up_proj_bias`).values;
  const dnBias = get(t, `${p}.experts.down_proj_bias`).values;
  const mx = gu.shape[1] !== x.length; // MXFP4 fixtures keep [E, out, in]; the bf16 layout is [E, in, out]
  const D = x.length;
  const I = guBias.length / (2 * (gu.shape[0] as number));
  const limit = c.swiglu_limit;
  const y = new Float64Array(D);
  chosen.forEach((e, j) => {
    // gate_up = x @ gate_up_proj[e] + bias, then gate = [..., ::2], up = [..., 1::2]
    const h = new Float64Array(2 * I);
    for (let o = 0; o < 2 * I; o++) {
      let s = guBias[e * 2 * I + o];
      for (let i = 0; i < D; i++) s += x[i] * (mx ? gu.values[(e * 2 * I + o) * D + i] : gu.values[(e * D + i) * 2 * I + o]);
      h[o] = s;
    }
    const act = new Float64Array(I);
    for (let i = 0; i < I; i++) {
      const g = Math.min(h[2 * i], limit);
      const u = Math.max(Math.min(h[2 * i + 1], limit), -limit);
      act[i] = g * sigmoid(1.702 * g) * (u + 1);
    }
    for (let o = 0; o < D; o++) {
      let s = dnBias[e * D + o];
      for (let i = 0; i < I; i++) s += act[i] * (mx ? dn.values[(e * D + o) * I + i] : dn.values[(e * I + i) * D + o]);
      y[o] += w[j] * s;
    }
  });
  return y;
};

const BLOCKS: Record<string, Block> = {
  mixtral,
  qwen2_moe: softmaxTopKBlock('qwen2'),
  qwen3_moe: softmaxTopKBlock('none'),
  olmoe: softmaxTopKBlock('none'),
  deepseek_v2: deepseekV2,
  deepseek_v3: deepseekV3,
  gpt_oss: gptOss,
};

/** The block's output for x [tokens, D], in float64. */
export function referenceBlock(t: Tensors, config: Record<string, unknown>, layer: number, x: Float32Array, tokens: number): Float64Array {
  const block = BLOCKS[config.model_type as string];
  const d = x.length / tokens;
  const out = new Float64Array(x.length);
  for (let i = 0; i < tokens; i++) out.set(block(t, config as never, layer, Float64Array.from(x.subarray(i * d, (i + 1) * d))), i * d);
  return out;
}
