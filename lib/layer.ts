import { ACTIVATIONS, Activation, isGated } from './activation';
import { AuxLoss, AuxLossKind, AuxLossSpec, computeAuxLosses } from './aux-losses';
import { describe, rangeError, typeError } from './errors';
import { ExpertWeights, expertSpec } from './expert-weights';
import * as gating from './gating';
import { LayerTimings, NativeExpertSpec, NativeLayer, native } from './native';
import { Random } from './random';
import { ROUTER_KINDS, RouterConfig, checkRouterConfig, impliedTopK } from './router-config';
import { routingRuleOf } from './gating/registry';
import type { BuiltInRouting, RoutingRule } from './gating/rule';
import { MAX_ELEMENTS, Tensor, expectSeed } from './tensor';
import { MAX_DIM, MAX_EXPERTS, expectBoolean, expectInteger, expectOneOf, expectOptions, expectTensor, float32Data } from './validate';

export interface MoEConfig {
  dModel: number;
  dHidden: number;
  numExperts: number;
  /**
   * Experts per token, 1..numExperts. Required by the 'topK' (default), 'noisyTopK' and 'sigmoidBias'
   * routers; implied by 'soft' (numExperts), 'switch' (1) and 'gshardTop2' (2); unused by 'expertChoice'.
   */
  topK?: number;
  /** Expert activation; 'swiglu' (the default) is silu(x W1^T) * (x W3^T), as in Mixtral. */
  activation?: Activation;
  /** For the default router: renormalise the top-k softmax weights to sum to 1 (Mixtral / HF, the default). */
  normalizeTopK?: boolean;
  /** Use at most this many threads of the shared pool for this layer; 0 (the default) = all, see setThreads. */
  threads?: number;
  /** The routing rule (default { kind: 'topK' }: Mixtral's softmax top-k); see gating/. */
  router?: RouterConfig;
  /** Always-on shared experts added to every token's output (DeepSeekMoE); weights.shared holds them. */
  sharedExperts?: number;
  /** Hidden width of each shared expert (default dHidden). */
  sharedHidden?: number;
  /**
   * Where the layer runs: 'cpu' (default); 'cuda' (bf16 weights on GPU 0, needs a CUDA build and a device);
   * 'auto' = 'cuda' when both exist, else 'cpu'. Inputs and outputs stay host float32 Tensors either way.
   */
  backend?: 'cpu' | 'cuda' | 'auto';
}

export interface MoEWeights extends ExpertWeights {
  /** [numExperts, dModel]: router logits = x router^T. Always float32 in the kernels (Switch's selective precision). */
  router: Tensor;
  /** [numExperts, dModel]: W_noise of noisy top-k gating. */
  noiseRouter?: Tensor;
  /** The shared experts: w1/w3 [sharedExperts, sharedHidden, dModel], w2 [sharedExperts, dModel, sharedHidden]. */
  shared?: ExpertWeights;
}

export interface Routing {
  /** Slots per token (for expert choice, the most experts any token got). */
  topK: number;
  /** [tokens * topK] expert per slot, token-major (token t at t*topK .. t*topK+topK-1), descending weight; -1 = dropped. */
  experts: Int32Array;
  /** [tokens * topK] routing weight per slot (0 for dropped slots). */
  weights: Float32Array;
  /** [numExperts] slots each expert received, after dropping. */
  tokensPerExpert: Int32Array;
  /** [tokens, numExperts] router logits (before exploration noise). */
  logits: Tensor<'float32'>;
  /** Slots dropped by capacity (and GShard's random routing). */
  dropped: number;
  /** The router's full result (float64), for its backward pass in gating/; absent on the built-in fast path. */
  gate?: gating.GateResult;
  /** What the router read: x, or x with Switch jitter applied while training. */
  routerInput: Float32Array;
}

export interface MoEOutput {
  /** [tokens, dModel]: sum over the selected experts of weight * expert(x), plus the shared experts. */
  output: Tensor<'float32'>;
  routing: Routing;
  /** The balance losses asked for with options.auxLosses: value and dL/d(router logits) each. */
  auxLosses?: Partial<Record<AuxLossKind, AuxLoss>>;
}

export interface ForwardOptions {
  /** Training mode: noisy top-k noise, exploration noise, jitter and GShard random routing apply. */
  training?: boolean;
  /** Balance losses to compute with the output, e.g. ['switch', 'zLoss'] or [{ kind: 'load', coefficient: 1e-2 }]. */
  auxLosses?: readonly AuxLossSpec[];
  /**
   * A float32 [tokens, dModel] tensor to write the output into, returned as `output`, instead of a new one: no
   * allocation per call in a serving loop. It must share no memory with x; with `forward`, read it only once the
   * Promise has settled.
   */
  out?: Tensor;
}

export interface GateGradients {
  /** dL/d(slot weights) [T * topK] from gradOutput (absent without it). */
  gradWeights?: Float64Array;
  /** dL/d(router logits) [T, E]: the task loss through the router's backward, plus every aux loss. */
  gradLogits: Float64Array;
  /** dL/dW_g [E, dModel]. */
  gradRouter: Float64Array;
  /** Noisy top-k only: dL/d(x W_noise^T) [T, E] and dL/dW_noise [E, dModel]. */
  gradNoiseLogits?: Float64Array;
  gradNoiseRouter?: Float64Array;
}

type Resolved = Required<Omit<MoEConfig, 'router' | 'backend'>> & { router: Readonly<RouterConfig>; backend: 'cpu' | 'cuda' };

/**
 * A Mixture-of-Experts layer (Shazeer et al. 2017 eq. 1: y = sum_i G(x)_i E_i(x)). Weights are packed once
 * here; forward runs the router, dispatch, grouped expert GEMMs (activation fused) and combine natively. The
 * default router (Mixtral's softmax top-k) runs entirely in the native core; the other rules route in
 * TypeScript (gating/) on the native router logits and hand the result to the same native kernels.
 */
export class MoELayer implements Disposable {
  readonly config: Readonly<Resolved>;
  private handle: NativeLayer | undefined;
  private readonly noiseRouter: Float32Array | null;
  private readonly random: Random;
  private scoreBias: Float64Array | undefined; // sigmoidBias: the selection bias, updatable (DeepSeek-V3 eq. 16)
  private readonly rule: RoutingRule;

  constructor(config: MoEConfig, weights: MoEWeights) {
    this.config = checkConfig(config);
    const c = this.config;
    if (typeof weights !== 'object' || weights === null) throw typeError('weights to be an object of Tensors', describe(weights));
    const floats = ['float32', 'float16', 'bfloat16'] as const;
    const routerDims = [c.numExperts, c.dModel];
    const router = float32Data(expectTensor(weights.router, 'weights.router', floats, routerDims, ['numExperts', 'dModel']));
    this.noiseRouter = null;
    this.rule = routingRuleOf(c.router.kind);
    if (this.rule.usesNoiseRouter) {
      if (weights.noiseRouter === undefined)
        throw typeError(`weights.noiseRouter to be a Tensor [${c.numExperts}, ${c.dModel}] (W_noise of noisy top-k)`, 'undefined');
      // A copy: the weights are read once, when the layer is built, like the packed ones (a later change to the
      // caller's array must not change later forwards).
      this.noiseRouter = Float32Array.from(float32Data(expectTensor(weights.noiseRouter, 'weights.noiseRouter', floats, routerDims, ['numExperts', 'dModel'])));
    } else if (weights.noiseRouter !== undefined) {
      throw rangeError(`no weights.noiseRouter (router '${c.router.kind}' has no noise)`, describe(weights.noiseRouter));
    }
    const experts = expertSpec(weights, { numExperts: c.numExperts, dModel: c.dModel, dHidden: c.dHidden, activation: c.activation });
    let shared: NativeExpertSpec | null = null;
    if (c.sharedExperts > 0) {
      if (typeof weights.shared !== 'object' || weights.shared === null)
        throw typeError(`weights.shared to be expert weights for ${c.sharedExperts} shared experts`, describe(weights.shared));
      shared = expertSpec(weights.shared, { numExperts: c.sharedExperts, dModel: c.dModel, dHidden: c.sharedHidden, activation: c.activation }, 'weights.shared');
    } else if (weights.shared !== undefined) {
      throw rangeError('no weights.shared (config.sharedExperts is 0)', describe(weights.shared));
    }
    this.random = new Random(c.router.seed ?? 0);
    if (c.router.kind === 'sigmoidBias' && c.router.bias) this.scoreBias = Float64Array.from(c.router.bias);
    this.handle = new (native().NativeLayer)({
      experts, shared, router, topK: c.topK, normalizeTopK: c.normalizeTopK, threads: c.threads, backend: c.backend,
      routing: this.rule.builtIn?.(c.router, c.backend) ?? NOT_BUILT_IN,
    });
  }

  /**
   * Replaces the selection bias of the 'sigmoidBias' router, e.g. with losses.updateBalanceBias after a step
   * (DeepSeek-V3's auxiliary-loss-free balancing). CPU backend.
   */
  setRouterBias(bias: ArrayLike<number>): void {
    this.native();
    if (this.config.router.kind !== 'sigmoidBias') throw rangeError("a 'sigmoidBias' router for setRouterBias", `router '${this.config.router.kind}'`);
    if (this.config.backend === 'cuda') throw rangeError("backend 'cpu' for setRouterBias (the GPU keeps the bias it was built with)", "backend 'cuda'");
    gating.sigmoidBias({ data: new Float64Array(this.config.numExperts), shape: [1, this.config.numExperts] }, { ...this.config.router, k: this.config.topK, bias });
    this.scoreBias = Float64Array.from(bias);
  }

  /**
   * A layer with seeded random weights, nn.Linear-like scale (std 1/sqrt(fan_in)); biases only when `bias`;
   * a zero router when `zeroRouter` (Shazeer et al. and Chen et al. initialise W_g to zeros). The same seed
   * gives the same layer everywhere.
   */
  static random(config: MoEConfig, options: { seed?: number; bias?: boolean; zeroRouter?: boolean } = {}): MoELayer {
    const c = checkConfig(config);
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
      o.zeroRouter ? Tensor.zeros([c.numExperts, c.dModel]) : Tensor.randn([c.numExperts, c.dModel], { seed: rng.nextUint32(), std: 1 / Math.sqrt(c.dModel) });
    const weights: MoEWeights = { router: routerWeights(), ...experts(c.numExperts, c.dHidden) };
    if (routingRuleOf(c.router.kind).usesNoiseRouter) weights.noiseRouter = routerWeights();
    if (c.sharedExperts > 0) weights.shared = experts(c.sharedExperts, c.sharedHidden);
    return new MoELayer(config, weights);
  }

  get disposed(): boolean {
    return this.handle === undefined;
  }

  /** Bytes of packed weights the layer holds (router and experts). */
  get packedBytes(): number {
    return this.native().packedBytes();
  }

  /** Runs the layer off the event loop. x: float32 [tokens, dModel]; it is read, never modified. */
  async forward(x: Tensor, options: ForwardOptions = {}): Promise<MoEOutput> {
    const { handle, data, tokens, training, out } = this.prepare(x, options);
    if (this.nativeRouting(training)) {
      const r = await handle.forward(data, tokens, out?.data);
      return this.output(r.output, tokens, { ...r, topK: this.config.topK, dropped: 0, routerInput: data }, options, out);
    }
    const { gate, logits, ranked, weights, routerInput } = this.route(handle, data, tokens, training);
    const r = await handle.forwardRouted(data, tokens, gate.topK, gate.experts, weights, out?.data);
    return this.output(r.output, tokens, { ...gate, logits, weights, tokensPerExpert: r.tokensPerExpert, gate, routerInput }, options, out, ranked);
  }

  /** The same as forward, on the calling thread. */
  forwardSync(x: Tensor, options: ForwardOptions = {}): MoEOutput {
    const { handle, data, tokens, training, out } = this.prepare(x, options);
    if (this.nativeRouting(training)) {
      const r = handle.forwardSync(data, tokens, out?.data);
      return this.output(r.output, tokens, { ...r, topK: this.config.topK, dropped: 0, routerInput: data }, options, out);
    }
    const { gate, logits, ranked, weights, routerInput } = this.route(handle, data, tokens, training);
    const r = handle.forwardRoutedSync(data, tokens, gate.topK, gate.experts, weights, out?.data);
    return this.output(r.output, tokens, { ...gate, logits, weights, tokensPerExpert: r.tokensPerExpert, gate, routerInput }, options, out, ranked);
  }

  /**
   * Each routed slot's unweighted expert output, [tokens * topK, dModel] (zero rows for dropped slots), for the
   * routing of a forward of x: what dL/d(routing weights) is made of.
   */
  slotOutputs(x: Tensor, routing: Routing): Tensor<'float32'> {
    const { handle, data, tokens } = this.prepare(x, {});
    const out = handle.slotOutputs(data, tokens, routing.topK, routing.experts);
    return Tensor.from(out, [tokens * routing.topK, this.config.dModel]);
  }

  /**
   * The gradient paths of the router (Shazeer et al.: the gate is trained by back-propagation with the rest):
   * from dL/d(output) [tokens, dModel] through the routing weights (dL/dw_s = <dL/dy_t, E_s(x_t)>) and the
   * router's backward, plus the gradients of every aux loss of `result`, to dL/dW_g (and dL/dW_noise).
   * The choices, dropping and sampled noise of that forward are held fixed.
   */
  gateGradients(x: Tensor, result: MoEOutput, gradOutput?: Tensor): GateGradients {
    if (typeof result !== 'object' || result === null || typeof result.routing !== 'object' || result.routing === null)
      throw typeError('result to be the result of this layer\'s forward', describe(result));
    const { routing } = result;
    const logits = expectTensor(routing.logits, 'result.routing.logits', ['float32'], [null, this.config.numExperts], ['tokens', 'numExperts']);
    expectTensor(x, 'x', ['float32'], [logits.shape[0], this.config.dModel], ['tokens', 'dModel']);
    if (routing.topK !== this.config.topK && routing.gate === undefined)
      throw rangeError(`result.routing.topK = ${this.config.topK} (this layer's)`, describe(routing.topK));
    const gate = routing.gate ?? this.defaultGate(routing);
    const { tokens, numExperts } = gate;
    const gradLogits = new Float64Array(tokens * numExperts);
    const gradNoiseLogits: Float64Array | undefined = routingRuleOf(gate.kind).usesNoiseRouter ? new Float64Array(tokens * numExperts) : undefined;
    let gradWeights: Float64Array | undefined;
    if (gradOutput !== undefined) {
      const g = expectTensor(gradOutput, 'gradOutput', ['float32'], [tokens, this.config.dModel], ['tokens', 'dModel']).data;
      for (let i = 0; i < g.length; i++)
        if (!Number.isFinite(g[i])) throw rangeError('gradOutput to contain only finite values', `${g[i]} at gradOutput[${Math.floor(i / this.config.dModel)}, ${i % this.config.dModel}]`);
      const slots = this.slotOutputs(x, routing).data;
      const d = this.config.dModel;
      gradWeights = new Float64Array(tokens * routing.topK);
      for (let s = 0; s < gradWeights.length; s++) {
        const t = Math.floor(s / routing.topK);
        let dot = 0;
        for (let i = 0; i < d; i++) dot += g[t * d + i] * slots[s * d + i];
        gradWeights[s] = dot;
      }
      const b = gating.backward(gate, gradWeights);
      add(gradLogits, b.gradLogits);
      if (b.gradNoiseLogits) add(gradNoiseLogits!, b.gradNoiseLogits);
    }
    for (const aux of Object.values(result.auxLosses ?? {})) {
      add(gradLogits, aux.gradLogits);
      if (aux.gradNoiseLogits) add(gradNoiseLogits!, aux.gradNoiseLogits);
    }
    const input = { data: routing.routerInput, shape: [tokens, this.config.dModel] };
    const out: GateGradients = { gradLogits, gradRouter: gating.routerWeightGradient(gradLogits, input) };
    if (gradWeights) out.gradWeights = gradWeights;
    if (gradNoiseLogits) {
      out.gradNoiseLogits = gradNoiseLogits;
      out.gradNoiseRouter = gating.routerWeightGradient(gradNoiseLogits, input);
    }
    return out;
  }

  /** Where the time of the last forward went (ms): router, routing, dispatch, experts, combine, total. */
  lastTimings(): LayerTimings {
    return this.native().lastTimings();
  }

  /** Frees the packed weights; a forward already running finishes first. Later calls throw. */
  dispose(): void {
    this.handle?.dispose();
    this.handle = undefined;
  }

  /** `using x = ...` (TypeScript 5.2+, Node 20.4+ / 18.18+) disposes it at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  private native(): NativeLayer {
    if (!this.handle) throw typeError('a layer that is not disposed', 'a disposed MoELayer');
    return this.handle;
  }

  private prepare(x: Tensor, options: ForwardOptions) {
    const handle = this.native();
    const xs = expectTensor(x, 'x', ['float32'], [null, this.config.dModel], ['tokens', 'dModel']);
    const tokens = xs.shape[0];
    expectInteger(tokens, 'x.shape[0] (tokens)');
    if (typeof options !== 'object' || options === null) throw typeError('options to be an object', describe(options));
    const training = expectBoolean(options.training ?? false, 'options.training');
    const out = options.out === undefined ? undefined : expectTensor(options.out, 'options.out', ['float32'], [tokens, this.config.dModel], ['tokens', 'dModel']);
    if (out && sharesMemory(out.data, xs.data)) throw rangeError('options.out to share no memory with x', 'overlapping arrays');
    return { handle, data: xs.data, tokens, training, out };
  }

  /**
   * Whether the native core routes this forward by itself (the rule's builtIn: Mixtral's softmax top-k, and on
   * CUDA DeepSeek-V3's sigmoid + bias): never while training noise (exploration, jitter) applies.
   */
  private nativeRouting(training: boolean): boolean {
    const r = this.config.router;
    const noisy = training && ((r.explorationNoise ?? 0) > 0 || (r.jitter ?? 0) > 0);
    return !noisy && this.rule.builtIn?.(r, this.config.backend) !== undefined;
  }

  private route(handle: NativeLayer, x: Float32Array, tokens: number, training: boolean) {
    const c = this.config;
    const r = c.router;
    const seed = () => this.random.nextUint32();
    const routerInput = training && (r.jitter ?? 0) > 0 ? gating.multiplicativeJitter(x, r.jitter!, seed()) : x;
    const logits = handle.routerLogits(routerInput, tokens);
    const shape = [tokens, c.numExperts];
    const explored = training && (r.explorationNoise ?? 0) > 0;
    const l = { data: explored ? gating.explorationNoise({ data: logits, shape }, { scale: r.explorationNoise, seed: seed() }) : logits, shape };
    const gate = this.rule.route({
      logits: l, router: r, topK: c.topK, training, seed, bias: this.scoreBias,
      noiseLogits: () => ({ data: native().routerLogits(routerInput, tokens, c.dModel, this.noiseRouter!, c.numExperts), shape }),
    });
    return { gate, logits, ranked: l.data, weights: Float32Array.from(gate.weights), routerInput };
  }

  /** The float64 gate of the native routing, recomputed from its logits by the rule (the same choices). */
  private defaultGate(routing: Routing): gating.GateResult {
    const { numExperts, topK, router } = this.config;
    const logits = { data: routing.logits.data, shape: [routing.logits.shape[0], numExperts] };
    const noNoise = (): never => {
      throw new Error('moe-kernels: internal: a built-in rule drew training randomness');
    };
    return this.rule.route({ logits, router, topK, training: false, seed: noNoise, noiseLogits: noNoise, bias: this.scoreBias });
  }

  private output(
    output: Float32Array, tokens: number,
    r: {
      topK: number; experts: Int32Array; weights: Float32Array; tokensPerExpert: Int32Array; logits: Float32Array; dropped: number;
      gate?: gating.GateResult; routerInput: Float32Array;
    },
    // out: options.out as prepare() validated it, returned as the output (the native side wrote into it)
    options: ForwardOptions, out: Tensor<'float32'> | undefined, ranked: ArrayLike<number> = r.logits,
  ): MoEOutput {
    const routing: Routing = {
      topK: r.topK, experts: r.experts, weights: r.weights, tokensPerExpert: r.tokensPerExpert,
      logits: Tensor.trusted(r.logits, [tokens, this.config.numExperts], 'float32'), dropped: r.dropped, routerInput: r.routerInput,
    };
    if (r.gate) routing.gate = r.gate;
    const result: MoEOutput = { output: out ?? Tensor.trusted(output, [tokens, this.config.dModel], 'float32'), routing };
    if (options.auxLosses !== undefined) result.auxLosses = computeAuxLosses(options.auxLosses, r.gate ?? this.defaultGate(routing), ranked);
    return result;
  }
}

/** The spec's routing of a layer whose rule the core does not run: its forward always comes back routed. */
const NOT_BUILT_IN: BuiltInRouting = { rule: 'none', numGroups: 1, topKGroups: 1, routeScale: 1, bias: null };

/** 'auto' picks CUDA when compiled and a device exists; 'cuda' must have both, with a message saying which is missing. */
function resolveBackend(backend: unknown): 'cpu' | 'cuda' {
  const b = expectOneOf(backend ?? 'cpu', 'config.backend', ['cpu', 'cuda', 'auto'] as const);
  if (b === 'cpu') return 'cpu';
  const { cuda } = native().backendInfo();
  if (cuda.compiled && cuda.devices > 0) return 'cuda';
  if (b === 'auto') return 'cpu';
  throw rangeError(
    "backend 'cuda' to have a CUDA build and a device",
    cuda.compiled
      ? `no device (${cuda.reason ?? 'unknown'})`
      : 'a build without CUDA: build it where nvcc is installed with `node node_modules/moe-kernels/scripts/build-native.js --cuda` ' +
          '(in a clone: `npm run build:cuda`)',
  );
}

function add(into: Float64Array, from: ArrayLike<number>): void {
  for (let i = 0; i < into.length; i++) into[i] += from[i];
}

function checkConfig(config: MoEConfig): Resolved {
  if (typeof config !== 'object' || config === null) throw typeError('config to be an object', describe(config));
  const numExperts = expectInteger(config.numExperts, 'config.numExperts', 1, MAX_EXPERTS);
  const dHidden = expectInteger(config.dHidden, 'config.dHidden', 1, MAX_DIM);
  const router = (config.router ?? { kind: 'topK' }) as RouterConfig;
  const kind = typeof router === 'object' && router !== null ? router.kind : undefined;
  const implied = kind && ROUTER_KINDS.includes(kind) ? impliedTopK(kind, numExperts) : undefined;
  let topK: number;
  if (implied === 'experts choose') {
    if (config.topK !== undefined) throw rangeError("no config.topK with router 'expertChoice' (experts choose; see capacityFactor)", describe(config.topK));
    topK = 1;
  } else if (implied !== undefined) {
    if (config.topK !== undefined && config.topK !== implied)
      throw rangeError(`config.topK = ${implied} (implied by router '${kind}') or none`, describe(config.topK));
    topK = implied;
  } else topK = expectInteger(config.topK, `config.topK (numExperts = ${numExperts})`, 1, numExperts);
  const sharedExperts = config.sharedExperts === undefined ? 0 : expectInteger(config.sharedExperts, 'config.sharedExperts', 0, MAX_EXPERTS);
  const normalizeTopK = expectBoolean(config.normalizeTopK ?? true, 'config.normalizeTopK');
  const resolvedRouter = checkRouterConfig(
    kind === 'topK' && config.normalizeTopK !== undefined && (router as { normalize?: boolean }).normalize === undefined
      ? { ...router, normalize: normalizeTopK } : router,
    numExperts, topK,
  );
  const backend = resolveBackend(config.backend);
  if (backend === 'cuda' && sharedExperts > 0) throw rangeError("config.sharedExperts = 0 with backend 'cuda' (not supported on the GPU yet)", `${sharedExperts}`);
  const dModel = expectInteger(config.dModel, 'config.dModel', 1, MAX_DIM);
  const sharedHidden = config.sharedHidden === undefined ? dHidden : expectInteger(config.sharedHidden, 'config.sharedHidden', 1, MAX_DIM);
  // Each weight tensor must be able to exist (V8's typed arrays end at 2^32 elements): refuse a config whose
  // experts could not be allocated before trying, instead of V8's raw "Invalid typed array length" or minutes
  // of allocation.
  for (const [name, count, hidden] of [['experts', numExperts, dHidden], ['shared experts', sharedExperts, sharedHidden]] as const) {
    if (count * hidden * dModel > MAX_ELEMENTS)
      throw rangeError(`the ${name}' weights (${count} x ${hidden} x ${dModel}) to have at most ${MAX_ELEMENTS} elements each`, `${count * hidden * dModel}`);
  }
  return {
    backend,
    dModel,
    dHidden,
    numExperts,
    topK,
    activation: expectOneOf(config.activation ?? 'swiglu', 'config.activation', ACTIVATIONS),
    normalizeTopK: kind === 'topK' ? ((resolvedRouter as { normalize?: boolean }).normalize ?? true) : normalizeTopK,
    threads: config.threads === undefined ? 0 : expectInteger(config.threads, 'config.threads', 0, 256),
    router: resolvedRouter,
    sharedExperts,
    sharedHidden,
  };
}

/** Whether two typed arrays overlap in memory (views of one buffer). */
function sharesMemory(a: Float32Array, b: Float32Array): boolean {
  return a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}
