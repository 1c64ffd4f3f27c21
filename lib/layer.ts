import { capabilities, requireFeature } from './capabilities';
import { describe, rangeError, typeError } from './errors';
import { GateGradients, gateGradients } from './gate-gradients';
import { impliedQuantization } from './expert-weights';
import {
  BackwardContext,
  BackwardOptions,
  LayerGradients,
  experts as expertTensors,
  layerBackward,
  layerBackwardAsync,
} from './layer-backward';
import { OptimizerConfig, nativeParameterGradients, resolveOptimizer, stepInPlace } from './optimizer';
import { MoEConfig, ResolvedConfig, hostFacts, placeLayer, resolveConfig } from './layer-config';
import { ForwardOptions, MoEOutput, RoutedForward, Routing, assembleOutput } from './layer-output';
import { LayerRouter } from './layer-router';
import { auxLossesOf, resolveAuxLosses } from './aux-losses';
import type { GateResult } from './gating';
import type { QuantizedTensor } from './quant';
import { MoEWeights, RandomWeightsOptions, layerSpec, randomWeights, routerBiasOf } from './layer-weights';
import { LayerTimings, NativeDraws, NativeForwardCall, NativeForwardResult, NativeLayer, native } from './native';
import { FromPretrainedOptions, LoadedLayer, loadPretrained } from './pretrained/load';
import { StorePlan, storePlan } from './pretrained/expert-store';
import { ExpertCache, isExpertCache } from './expert-cache';
import { Tensor } from './tensor';
import { expectBoolean, expectInteger, expectTensor } from './validate';
import { checkMemory, layerElements, packedBytes } from './memory-limit';
import { forwardRecordOf, gradientsLayerOf, rememberForward, rememberGradients } from './forward-record';

export type { MoEConfig } from './layer-config';
export type { MoEWeights } from './layer-weights';
export type { ForwardOptions, MoEOutput, Routing } from './layer-output';
export type { GateGradients } from './gate-gradients';
export type { BackwardOptions, LayerGradients } from './layer-backward';

/**
 * A Mixture-of-Experts layer (Shazeer et al. 2017 eq. 1: y = sum_i G(x)_i E_i(x)). Weights are packed once
 * here; a forward is one call of the core: the router, the routing rule (every rule of gating/, in float64 C++ with
 * its training randomness), dispatch, grouped expert GEMMs (activation fused) and combine. A backward is one call
 * too: the experts' gradients, then the rule's backward and the router's.
 */
export class MoELayer implements Disposable {
  readonly config: Readonly<ResolvedConfig>;
  private handle: NativeLayer | undefined;
  private readonly router: LayerRouter;

  /** weights: Tensors, or (weightDtype 'int8' / 'int4') QuantizedTensors for w1, w3, w2, which imply the dtype. */
  constructor(config: MoEConfig, weights: MoEWeights<Tensor | QuantizedTensor>);
  // The third argument, hidden from the declaration, is how fromPretrained hands over a layer it packed off the event
  // loop: only this module can make a Prebuilt, so anything else passed there is ignored as extra arguments are.
  constructor(config: MoEConfig, weights: MoEWeights<Tensor | QuantizedTensor>, prebuilt?: unknown) {
    const built = prebuilt instanceof Prebuilt ? prebuilt : undefined;
    const p = built?.prepared ?? prepare(config, weights);
    this.config = p.config;
    this.router = p.router;
    this.handle = built?.handle ?? new (native().NativeLayer)(p.spec);
  }

  /**
   * Replaces the selection bias of the 'sigmoidBias' router, e.g. with losses.updateBalanceBias after a step
   * (DeepSeek-V3's auxiliary-loss-free balancing). CPU backend.
   */
  setRouterBias(bias: ArrayLike<number>): void {
    this.native();
    if (this.config.router.kind !== 'sigmoidBias')
      throw rangeError("a 'sigmoidBias' router for setRouterBias", `router '${this.config.router.kind}'`);
    requireFeature(capabilities(), this.config.backend, 'routerBiasUpdate'); // (the GPU keeps the bias it was built with)
    this.router.setBias(this.native(), bias);
  }

  /**
   * A layer with seeded random weights, nn.Linear-like scale (std 1/sqrt(fan_in)); biases only when `bias`;
   * a zero router when `zeroRouter` (Shazeer et al. and Chen et al. initialise W_g to zeros). The same seed
   * gives the same layer everywhere.
   */
  static random(config: MoEConfig, options: RandomWeightsOptions = {}): MoELayer {
    const c = resolveConfig(config, hostFacts(config));
    const elements = layerElements(c);
    checkMemory(elements * 4 + packedBytes(elements, c.weightDtype), "MoELayer.random's float32 weights and their packed copy");
    return new MoELayer(config, randomWeights(c, options));
  }

  /**
   * One MoE layer of a Hugging Face checkpoint directory (config.json and model.safetensors or its sharded index):
   * Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V2 / V3 (FP8 included), OLMoE and gpt-oss (MXFP4 included); see
   * lib/pretrained/families. Reads only that layer's tensors, expert by expert, off the event loop; reports
   * progress; an AbortSignal stops it between reads. The layer's weights stay in the checkpoint's precision
   * (bfloat16 by default) or are quantized as they are read (weightDtype 'int8' / 'int4').
   */
  static async fromPretrained(dir: string, options: FromPretrainedOptions = {}): Promise<MoELayer> {
    if (options?.cache !== undefined) return fromPretrainedCached(dir, options);
    const loaded = await loadPretrained(dir, options);
    options?.signal?.throwIfAborted();
    return adopt(loaded, prepare(loaded.config, loaded.weights), options);
  }

  get disposed(): boolean {
    return this.handle === undefined;
  }

  /**
   * A layer on an ExpertCache: starts reading the experts its router would pick for x, so that they are resident
   * when a forward wants them. Call it on the next layer with this layer's input while this one runs: the residual
   * stream changes little from layer to layer, so the next router's choice on it is a good guess (Eliseev & Mazur
   * 2023, speculative expert loading). Returns the reads started (0 for a layer holding its experts).
   */
  prefetch(x: Tensor): number {
    const handle = this.native();
    const t = expectTensor(x, 'x', ['float32'], [null, this.config.dModel], ['tokens', 'dModel']);
    return handle.prefetch({ x: t.data as Float32Array, tokens: t.shape[0] });
  }

  /** Bytes of packed weights the layer holds (router and experts). */
  get packedBytes(): number {
    return this.native().packedBytes();
  }

  /**
   * Bytes of host memory the layer holds: its packed weights, and once it trains, the optimizer's state, the backward's
   * workspace and what a training forward kept. V8 is told of it (so that undisposed layers are collected in time).
   */
  get memoryBytes(): number {
    return this.native().memoryBytes().bytes;
  }

  /** Runs the layer off the event loop. x: float32 [tokens, dModel]; it is read, never modified. */
  async forward(x: Tensor, options: ForwardOptions = {}): Promise<MoEOutput> {
    const p = this.collectiveChecks(() => this.prepareForward(x, options));
    return this.inFlight(async () => this.assemble(p, await p.handle.forward(forwardCall(p))));
  }

  /** Counts an async call of this layer while it is in flight (step refuses to run beside one). */
  private async inFlight<T>(call: () => Promise<T>): Promise<T> {
    this.callsInFlight++;
    try {
      return await call();
    } finally {
      this.callsInFlight--;
    }
  }
  private callsInFlight = 0;
  /** The layer's own gradients, which a backward overwrites by default (BackwardOptions). */
  private gradients: LayerGradients | undefined;

  /** The same as forward, on the calling thread. */
  forwardSync(x: Tensor, options: ForwardOptions = {}): MoEOutput {
    const p = this.collectiveChecks(() => this.prepareForward(x, options));
    return this.assemble(p, p.handle.forwardSync(forwardCall(p)));
  }

  /**
   * A forward's checks (its balance losses' too: against the layer and the call, before anything runs), and a copy of
   * x as it is now (the result's routerInput; a backward checks its x against it).
   */
  private prepareForward(x: Tensor, options: ForwardOptions) {
    const p = this.prepare(x, options);
    const c = this.config;
    const auxLosses =
      options.auxLosses === undefined
        ? undefined
        : resolveAuxLosses(options.auxLosses, {
            router: c.router.kind,
            training: p.training,
            tokens: p.tokens,
            numExperts: c.numExperts,
            topK: c.topK,
          });
    if (auxLosses && p.tokens === 0) throw rangeError('at least 1 token for options.auxLosses', '0 tokens');
    return { ...p, snapshot: new Float32Array(p.data), auxLosses };
  }

  /**
   * An expert-parallel layer's forward is collective: when this rank fails before it reaches the core, the other
   * ranks are told (they throw a RangeError saying another rank failed) instead of waiting for it.
   */
  private collectiveChecks<T>(checks: () => T): T {
    try {
      return checks();
    } catch (e) {
      if (this.config.expertParallel !== false && this.handle) this.handle.collectiveFailed();
      throw e;
    }
  }

  /**
   * Each routed slot's unweighted expert output, [tokens * topK, dModel] (zero rows for dropped slots), for the
   * routing of a forward of x: what dL/d(routing weights) is made of.
   */
  slotOutputs(x: Tensor, routing: Routing): Tensor<'float32'> {
    if (typeof routing !== 'object' || routing === null)
      throw typeError("routing to be a forward's routing (result.routing)", describe(routing));
    const { handle, data, tokens } = this.prepare(x, {});
    const out = handle.slotOutputs({ x: data, tokens, k: routing.topK, experts: routing.experts });
    return Tensor.from(out, [tokens * routing.topK, this.config.dModel]);
  }

  /**
   * The gradient paths of the router (Shazeer et al.: the gate is trained by back-propagation with the rest):
   * from dL/d(output) [tokens, dModel] through the routing weights (dL/dw_s = <dL/dy_t, E_s(x_t)>) and the
   * router's backward, plus the gradients of every aux loss of `result`, to dL/dW_g (and dL/dW_noise).
   * The choices, dropping and sampled noise of that forward are held fixed.
   */
  gateGradients(x: Tensor, result: MoEOutput, gradOutput?: Tensor): GateGradients {
    const weightGradients = (input: Tensor, routing: Routing, grad: Float32Array) => {
      const { handle, data, tokens } = this.prepare(input, {});
      return handle.routingWeightGradients({ x: data, tokens, k: routing.topK, experts: routing.experts, gradOutput: grad });
    };
    // (a result of this layer's forward: routed again with its draws; anything else as an evaluation forward of x)
    const defaultGate = (routing: Routing) => {
      const record = forwardRecordOf(result);
      const mine = record?.layer === this;
      const draws = mine ? record.draws : NO_DRAWS;
      const xs = expectTensor(x, 'x', ['float32'], [routing.logits.shape[0], this.config.dModel], ['tokens', 'dModel']);
      return this.router.gateOf(
        this.native(),
        xs.data,
        routing.logits.data,
        draws,
        mine ? record.selectionBias : this.router.selectionBias,
      );
    };
    return gateGradients(this.config, x, result, gradOutput, weightGradients, defaultGate);
  }

  /**
   * The layer's weights read back from their packed form, as float32 Tensors in the nn.Linear layout [out, in]
   * (the MoEWeights the constructor takes): the values the kernels compute with (bfloat16 / float16 widened,
   * int8 / int4 as codes times scales). `new MoELayer(layer.config, layer.exportWeights())` with weightDtype
   * 'float32' computes what this layer does; safetensors.save writes them. CPU backend.
   */
  exportWeights(): MoEWeights<Tensor<'float32'>> {
    const w = this.native().exportWeights({});
    const c = this.config;
    const result: MoEWeights<Tensor<'float32'>> = {
      router: Tensor.from(w.router, [c.numExperts, c.dModel]),
      ...expertTensors(w.experts, c.numExperts, c.dHidden, c.dModel),
    };
    if (w.noiseRouter) result.noiseRouter = Tensor.from(w.noiseRouter, [c.numExperts, c.dModel]);
    if (this.router.routerBias) result.routerBias = Tensor.from(Float32Array.from(this.router.routerBias), [c.numExperts]);
    if (w.shared) result.shared = expertTensors(w.shared, c.sharedExperts, c.sharedHidden, c.dModel);
    if (w.sharedGate) result.sharedGate = Tensor.from(w.sharedGate, [c.sharedExperts, c.dModel]);
    return result;
  }

  /**
   * The gradients of a forward's output (result, of x) for dL/d(output) = gradOutput [tokens, dModel]: of the input
   * (through the experts and the router), of every weight (the experts', shared experts' and gate's, biases, the
   * router's through the routing weights, plus every aux loss the forward computed). The routing, dropping and
   * sampled noise of that forward are held fixed; a forward with jitter is refused for now. Bitwise the same for
   * any thread count. CPU backend. The experts' part runs through the forward's GEMMs (core/backward.cpp), with the
   * pre-activations a training forward kept (`forward(x, { training: true })`) or recomputed.
   * The gradients are the layer's own by default: the next backward overwrites their arrays (BackwardOptions:
   * `fresh` for new ones, `into` for others).
   */
  backward(x: Tensor, result: MoEOutput, gradOutput: Tensor, options?: BackwardOptions): LayerGradients {
    const grads = layerBackward(this.backwardContext(), x, result, gradOutput, options);
    rememberGradients(grads.gate, this);
    return grads;
  }

  /**
   * backward with the experts' part off the event loop, on the layer's job thread (the router's part, milliseconds,
   * runs when it settles). x and gradOutput are copied; leave `result` as the forward returned it until the Promise
   * settles. `into`, or the layer's own gradients by default, receives a copy of the gradients as it settles (its
   * arrays are never written while JavaScript can reach them).
   */
  backwardAsync(x: Tensor, result: MoEOutput, gradOutput: Tensor, options?: BackwardOptions): Promise<LayerGradients> {
    const ctx = this.backwardContext();
    return this.inFlight(async () => {
      const grads = await layerBackwardAsync(ctx, x, result, gradOutput, options);
      rememberGradients(grads.gate, this);
      return grads;
    });
  }

  private backwardContext(): BackwardContext {
    const handle = this.native();
    const c = this.config;
    return {
      config: c,
      experts: (call) => handle.backwardSync(call),
      expertsAsync: (call) => handle.backward(call),
      collectiveChecks: (checks) => this.collectiveChecks(checks),
      forwardRecord: (result) => {
        const record = forwardRecordOf(result);
        return record?.layer === this ? record : undefined;
      },
      steps: this.optimizerSteps ?? 0,
      isOwnGradients: (grads) => gradientsLayerOf((grads as { gate?: object }).gate ?? {}) === this,
      ownGradients: () => this.gradients,
      keepGradients: (grads) => (this.gradients = grads),
    };
  }

  /**
   * One optimizer step with the gradients of a backward (`optimizer`: SGD with momentum or AdamW, PyTorch's
   * formulas): the packed weights are updated in place, without repacking, and the optimizer's state is kept in
   * the core beside them (the first step fixes the kind; steps are counted per layer for AdamW's bias correction).
   * weightDtype 'float32' and the CPU backend. Clip first with clipGradNorm if wanted.
   */
  step(grads: LayerGradients, optimizer: OptimizerConfig): void {
    const handle = this.native();
    const { o, g, routerBiasGrad } = this.collectiveChecks(() => {
      // A forward or backward in flight reads the weights on the job thread: stepping under it would hand it the
      // old weights or the new ones by chance (issue 34: 6-10 of 20 runs).
      if (this.callsInFlight > 0)
        throw rangeError(
          'no forward or backwardAsync of this layer in flight during step (await them first)',
          `${this.callsInFlight} in flight`,
        );
      const o = resolveOptimizer(optimizer);
      if (this.optimizerKind !== undefined && this.optimizerKind !== o.kind)
        throw rangeError(
          `optimizer.kind '${this.optimizerKind}' (the kind of this layer's earlier steps, whose state it keeps)`,
          `'${o.kind}'`,
        );
      const { native: g, routerBias: routerBiasGrad } = nativeParameterGradients(this.config, grads);
      return { o, g, routerBiasGrad };
    });
    const step = (this.optimizerSteps ?? 0) + 1;
    handle.applyGradients({ grads: g, step: { ...o, step } });
    const bias = this.router.routerBias;
    if (bias && routerBiasGrad) {
      this.biasState ??= [new Float32Array(bias.length), new Float32Array(bias.length)];
      stepInPlace(bias, routerBiasGrad, this.biasState[0], this.biasState[1], o, step);
      this.router.pushRouterBias(handle);
    }
    this.optimizerKind = o.kind;
    this.optimizerSteps = step;
  }

  private optimizerKind: 'sgd' | 'adamw' | undefined;
  private optimizerSteps: number | undefined;
  private biasState: [Float32Array, Float32Array] | undefined;

  /** Where the time of the last forward went (ms): router, routing, dispatch, experts, combine, total. */
  lastTimings(): LayerTimings {
    return this.native().lastTimings();
  }

  /** Frees the packed weights; a forward already running finishes first. Later calls throw. */
  dispose(): void {
    this.handle?.dispose();
    this.handle = undefined;
    this.gradients = undefined;
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
    // An expert-parallel rank may have no tokens of its own: it still serves its experts in the exchange.
    expectInteger(tokens, 'x.shape[0] (tokens)', this.config.expertParallel === false ? 1 : 0);
    if (typeof options !== 'object' || options === null) throw typeError('options to be an object', describe(options));
    const training = expectBoolean(options.training ?? false, 'options.training');
    const keep = training && !expectBoolean(options.recompute ?? false, 'options.recompute');
    const out =
      options.out === undefined
        ? undefined
        : expectTensor(options.out, 'options.out', ['float32'], [tokens, this.config.dModel], ['tokens', 'dModel']);
    // (a plain { data } object is wrapped without a copy only when data is a Float32Array: a number[] would be copied,
    // and the output written into the copy, not into the caller's array)
    const outData = (options.out as { data?: unknown } | undefined)?.data;
    if (out && out.data !== outData)
      throw typeError('options.out.data to be a Float32Array (the output is written into it)', describe(outData));
    if (out && sharesMemory(out.data, xs.data)) throw rangeError('options.out to share no memory with x', 'overlapping arrays');
    return { handle, data: xs.data, tokens, training, keep, out, options };
  }

  /**
   * A forward's result from the core's: the output, the routing it used, the aux losses. `routing.gate` (the rule's
   * float64 result) is made on first read, routed again in the core from the forward's logits and draws (the same
   * gate; for a fused forward, the rule's own float64 result of its logits), so that a forward nobody asks it of
   * pays nothing for it.
   */
  private assemble(p: PreparedForward, r: NativeForwardResult): MoEOutput {
    const selectionBias = this.router.selectionBias;
    const logits = Float32Array.from(r.logits); // (the caller may change the result's arrays; these are what ran)
    const draws = r.draws ?? NO_DRAWS;
    const routed: RoutedForward = {
      topK: r.topK,
      experts: r.experts,
      weights: r.weights,
      tokensPerExpert: r.tokensPerExpert,
      logits: r.logits,
      dropped: r.dropped ?? 0,
      // (what the router read: x as the call found it, or x with jitter)
      routerInput: r.routerInput ?? p.snapshot,
      lazyGate: p.tokens > 0 ? gateMaker(this.router, p.handle, p.snapshot, logits, draws, selectionBias) : undefined,
    };
    const aux = p.auxLosses && r.auxLosses ? auxLossesOf(p.auxLosses, r.auxLosses) : undefined;
    const result = assembleOutput(r.output, p.tokens, this.config, routed, p.out, aux);
    rememberForward(result, {
      layer: this,
      steps: this.optimizerSteps ?? 0,
      x: p.snapshot,
      topK: r.topK,
      experts: Int32Array.from(r.experts),
      weights: Float32Array.from(r.weights),
      logits,
      draws,
      selectionBias,
    });
    return result;
  }
}

/**
 * A layer's resolved config, router and native spec, from what the constructor was given; with `store`, one whose
 * routed experts are read from that expert store through the cache (weights then has no routed w1 / w3 / w2).
 */
function prepare(config: MoEConfig, weights: MoEWeights<Tensor | QuantizedTensor>, store?: { cache: ExpertCache; plan: StorePlan }) {
  // (only for a plain object: anything else is resolveConfig's TypeError)
  const plain = typeof config === 'object' && config !== null && !Array.isArray(config);
  const implied = plain && !store ? impliedQuantization(weights, config.weightDtype, config.groupSize) : undefined;
  const c = placeLayer(resolveConfig(implied ? { ...config, ...implied } : config, hostFacts(config)));
  const resident = store ? { ...c, numExperts: 0 } : c; // (a store's experts are in the cache's budget)
  checkMemory(packedBytes(layerElements(resident), c.weightDtype), "the layer's packed weights");
  const router = new LayerRouter(c, routerBiasOf(c, weights));
  const spec = layerSpec(c, weights, router.builtIn, router.nativeSpec(), store !== undefined);
  if (store) {
    requireFeature(capabilities(), c.backend, 'expertCache');
    spec.expertStore = { cache: store.cache.native(), ...store.plan };
  }
  return { config: c, router, spec };
}

/** The MoELayer of a loaded layer, packed on the job thread (seconds for a large one) with arrays only this call holds. */
async function adopt(loaded: LoadedLayer, prepared: ReturnType<typeof prepare>, options: FromPretrainedOptions): Promise<MoELayer> {
  const handle = await native().NativeLayer.build(prepared.spec);
  const layer = new (MoELayer as AdoptingConstructor)(loaded.config, loaded.weights, new Prebuilt(prepared, handle));
  if (options?.signal?.aborted) {
    layer.dispose();
    options.signal.throwIfAborted();
  }
  options?.onProgress?.({
    phase: 'done',
    bytesRead: loaded.bytesRead,
    totalBytes: loaded.bytesRead,
    ...(loaded.conversions ? { conversions: loaded.conversions } : {}),
  });
  return layer;
}

/**
 * fromPretrained with `cache`: the layer's router, biases and shared experts resident, its routed experts in an
 * expert store read through the cache. The store is written on first use (the layer loaded and packed whole once,
 * then its experts written and dropped) and reused while the checkpoint and options it was written for are unchanged.
 */
async function fromPretrainedCached(dir: string, options: FromPretrainedOptions): Promise<MoELayer> {
  const cache = options.cache;
  if (!isExpertCache(cache)) throw typeError('options.cache to be an ExpertCache', describe(cache));
  cache.native(); // (a disposed one is refused now, before any reading)
  if (options.expertParallel !== undefined && options.expertParallel !== false)
    throw rangeError('options.cache or options.expertParallel, not both', 'both');
  if (options.storeDir !== undefined && typeof options.storeDir !== 'string')
    throw typeError('options.storeDir to be a folder path (string)', describe(options.storeDir));
  // The layer without its routed experts: its config (dtypes resolved), router, biases and shared experts.
  const base = await loadPretrained(dir, options, false);
  const plan = await storePlan(dir, base.layer, base.config, options.storeDir);
  const prepared = prepare(base.config, base.weights, { cache, plan });
  const experts = prepared.spec.experts; // (the routed experts' shape and dtypes, as the store was written for them)
  if (!native().expertStoreMatches({ path: plan.path, fingerprint: plan.fingerprint, experts })) {
    const whole = await loadPretrained(dir, options);
    options.signal?.throwIfAborted();
    const handle = await native().NativeLayer.build(prepare(whole.config, whole.weights).spec);
    options.onProgress?.({ phase: 'store', bytesRead: whole.bytesRead, totalBytes: whole.bytesRead, what: plan.path });
    try {
      await handle.writeExpertStore({ path: plan.path, fingerprint: plan.fingerprint });
    } finally {
      handle.dispose();
    }
  }
  options.signal?.throwIfAborted();
  return adopt(base, prepared, options);
}

/** A layer's preparation and native handle, built before the constructor runs (fromPretrained packs on the job thread). */
class Prebuilt {
  constructor(
    readonly prepared: ReturnType<typeof prepare>,
    readonly handle: NativeLayer,
  ) {}
}

/** The constructor's hidden third argument, typed for fromPretrained's one call. */
type AdoptingConstructor = new (config: MoEConfig, weights: MoEWeights<Tensor | QuantizedTensor>, prebuilt: Prebuilt) => MoELayer;

/** The gate of a forward, made when asked for (a closure over these alone: one over the forward's scope cost ~3 us). */
function gateMaker(
  router: LayerRouter,
  handle: NativeLayer,
  x: Float32Array,
  logits: Float32Array,
  draws: NativeDraws,
  selectionBias: Float64Array | undefined,
): () => GateResult {
  return () => router.gateOf(handle, x, logits, draws, selectionBias);
}

/** The draws of an evaluation forward: none. */
const NO_DRAWS: NativeDraws = Object.freeze({ training: false, jitter: 0, exploration: 0, rule: 0 });

/** A forward's checked arguments (MoELayer.prepareForward), with its copy of x. */
type PreparedForward = ReturnType<MoELayer['prepareForward']>;

/**
 * A forward's call of the core: x, its tokens, where the output goes, whether it trains (and keeps state for the
 * backward), and the balance losses to compute with it.
 */
function forwardCall(p: PreparedForward): NativeForwardCall {
  return { x: p.data, tokens: p.tokens, out: p.out?.data, keep: p.keep, training: p.training, auxLosses: p.auxLosses };
}

/** Whether two typed arrays overlap in memory (views of one buffer). */
function sharesMemory(a: Float32Array, b: Float32Array): boolean {
  return a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}
