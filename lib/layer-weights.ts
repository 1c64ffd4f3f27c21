/** An MoELayer's weights: their checks against the config, the spec the native layer packs, and random init. */
import { capabilities, requireFeature } from './capabilities';
import { isGated } from './activation';
import { describe, rangeError, typeError } from './errors';
import { ExpertWeights, expertSpec, storedExpertSpec } from './expert-weights';
import { routingRuleOf } from './gating/registry';
import type { BuiltInRouting } from './gating/rule';
import { ResolvedConfig } from './layer-config';
import { NativeExpertSpec, NativeLayerSpec, NativeRouterSpec } from './native';
import type { QuantizedTensor } from './quant';
import { Random } from './random';
import { Tensor, expectSeed } from './tensor';
import { expectBoolean, expectOptions, expectTensor, float32Data } from './validate';

export interface MoEWeights<W extends Tensor | QuantizedTensor = Tensor> extends ExpertWeights<W> {
  /** [numExperts, dModel]: router logits = x router^T. Always float32 in the kernels (Switch's selective precision). */
  router: Tensor;
  /** [numExperts, dModel]: W_noise of noisy top-k gating. */
  noiseRouter?: Tensor;
  /** [numExperts]: added to the router logits (gpt-oss's router has a bias). Routing then runs in TypeScript. */
  routerBias?: Tensor;
  /** The shared experts: w1/w3 [sharedExperts, sharedHidden, dModel], w2 [sharedExperts, dModel, sharedHidden]. */
  shared?: ExpertWeights<W>;
  /**
   * [sharedExperts, dModel]: shared expert s is scaled per token by sigmoid(x . sharedGate[s]) instead of 1
   * (Qwen2-MoE's shared_expert_gate). CPU backend.
   */
  sharedGate?: Tensor;
}

/** weights.routerBias checked against the config, as float32, or undefined. */
export function routerBiasOf(c: ResolvedConfig, weights: unknown): Float32Array | undefined {
  const b = (weights as { routerBias?: unknown } | null)?.routerBias;
  if (b === undefined || b === null) return undefined;
  return float32Data(expectTensor(b, 'weights.routerBias', ['float32', 'float16', 'bfloat16'], [c.numExperts], ['numExperts']));
}

/** The spec's routing of a layer whose rule the core does not run: its forward always comes back routed. */
const NOT_BUILT_IN: BuiltInRouting = { rule: 'none', numGroups: 1, topKGroups: 1, routeScale: 1, bias: null };

/**
 * Checks the weights against the config and returns the spec of the native layer, which packs them once.
 * `builtIn`: what the backend runs fused for this layer (LayerRouter decides it), or undefined; `rule`: the layer's
 * routing rule, which the core runs otherwise. `stored`: the routed experts come from an expert store (no w1 / w3 / w2
 * in weights).
 */
export function layerSpec(
  c: ResolvedConfig,
  weights: MoEWeights<Tensor | QuantizedTensor>,
  builtIn: BuiltInRouting | undefined,
  ruleSpec: NativeRouterSpec,
  stored = false,
): NativeLayerSpec {
  if (typeof weights !== 'object' || weights === null) throw typeError('weights to be an object of Tensors', describe(weights));
  const rule = routingRuleOf(c.router.kind);
  const floats = ['float32', 'float16', 'bfloat16'] as const;
  const routerDims = [c.numExperts, c.dModel];
  const router = float32Data(expectTensor(weights.router, 'weights.router', floats, routerDims, ['numExperts', 'dModel']));
  let noiseRouter: Float32Array | null = null;
  if (rule.usesNoiseRouter) {
    if (weights.noiseRouter === undefined)
      throw typeError(`weights.noiseRouter to be a Tensor [${c.numExperts}, ${c.dModel}] (W_noise of noisy top-k)`, 'undefined');
    noiseRouter = float32Data(expectTensor(weights.noiseRouter, 'weights.noiseRouter', floats, routerDims, ['numExperts', 'dModel']));
  } else if (weights.noiseRouter !== undefined) {
    throw rangeError(`no weights.noiseRouter (router '${c.router.kind}' has no noise)`, describe(weights.noiseRouter));
  }
  const shape = {
    numExperts: c.numExperts,
    dModel: c.dModel,
    dHidden: c.dHidden,
    activation: c.activation,
    swigluAlpha: c.swigluAlpha,
    swigluLimit: c.swigluLimit,
  };
  const experts = stored
    ? storedExpertSpec(shape, c.weightDtype, c.groupSize, c.downWeightDtype)
    : expertSpec(weights, shape, 'weights', c.weightDtype, c.groupSize, c.expertSlice, c.downWeightDtype);
  let shared: NativeExpertSpec | null = null;
  if (c.sharedExperts > 0) {
    if (typeof weights.shared !== 'object' || weights.shared === null)
      throw typeError(`weights.shared to be expert weights for ${c.sharedExperts} shared experts`, describe(weights.shared));
    shared = expertSpec(
      weights.shared,
      {
        numExperts: c.sharedExperts,
        dModel: c.dModel,
        dHidden: c.sharedHidden,
        activation: c.activation,
        swigluAlpha: c.swigluAlpha,
        swigluLimit: c.swigluLimit,
      },
      'weights.shared',
      c.weightDtype,
      c.groupSize,
      undefined,
      c.downWeightDtype,
    );
  } else if (weights.shared !== undefined) {
    throw rangeError('no weights.shared (config.sharedExperts is 0)', describe(weights.shared));
  }
  let sharedGate: Float32Array | null = null;
  if (weights.sharedGate !== undefined && weights.sharedGate !== null) {
    if (c.sharedExperts === 0) throw rangeError('no weights.sharedGate (config.sharedExperts is 0)', describe(weights.sharedGate));
    requireFeature(capabilities(), c.backend, 'sharedGate');
    sharedGate = float32Data(
      expectTensor(weights.sharedGate, 'weights.sharedGate', floats, [c.sharedExperts, c.dModel], ['sharedExperts', 'dModel']),
    );
  }
  return {
    experts,
    shared,
    sharedGate,
    router,
    noiseRouter,
    topK: c.topK,
    normalizeTopK: c.normalizeTopK,
    threads: c.threads,
    backend: c.backend,
    ...(c.expertParallel === false ? {} : { expertParallel: c.expertParallel === true ? true : [...c.expertParallel] }),
    routing: builtIn ?? NOT_BUILT_IN,
    rule: ruleSpec,
  };
}

/** Options of MoELayer.random. */
export interface RandomWeightsOptions {
  seed?: number;
  bias?: boolean;
  zeroRouter?: boolean;
}

/**
 * Seeded random weights, nn.Linear-like scale (std 1/sqrt(fan_in)); biases only when `bias`; a zero router when
 * `zeroRouter`. The same seed gives the same weights everywhere.
 */
export function randomWeights(c: ResolvedConfig, options: RandomWeightsOptions): MoEWeights {
  const o = expectOptions(options);
  const rng = new Random(expectSeed(o.seed ?? 0, 'options.seed'));
  expectBoolean(o.bias ?? false, 'options.bias');
  expectBoolean(o.zeroRouter ?? false, 'options.zeroRouter');
  const experts = (count: number, hidden: number): ExpertWeights => {
    const next = () => rng.nextUint32();
    const { dModel: d } = c;
    const gated = isGated(c.activation);
    const w: ExpertWeights = {
      w1: Tensor.randn([count, hidden, d], { seed: next(), std: 1 / Math.sqrt(d) }),
      w3: gated ? Tensor.randn([count, hidden, d], { seed: next(), std: 1 / Math.sqrt(d) }) : undefined,
      w2: Tensor.randn([count, d, hidden], { seed: next(), std: 1 / Math.sqrt(hidden) }),
    };
    if (o.bias) {
      w.b1 = Tensor.randn([count, hidden], { seed: next(), std: 0.1 });
      if (gated) w.b3 = Tensor.randn([count, hidden], { seed: next(), std: 0.1 });
      w.b2 = Tensor.randn([count, d], { seed: next(), std: 0.1 });
    }
    return w;
  };
  const routerWeights = () =>
    o.zeroRouter
      ? Tensor.zeros([c.numExperts, c.dModel])
      : Tensor.randn([c.numExperts, c.dModel], { seed: rng.nextUint32(), std: 1 / Math.sqrt(c.dModel) });
  const weights: MoEWeights = { router: routerWeights(), ...experts(c.numExperts, c.dHidden) };
  if (routingRuleOf(c.router.kind).usesNoiseRouter) weights.noiseRouter = routerWeights();
  if (c.sharedExperts > 0) weights.shared = experts(c.sharedExperts, c.sharedHidden);
  return weights;
}
