/**
 * How an MoELayer routes each forward: by the native core itself where its rule allows (Mixtral's softmax top-k;
 * DeepSeek-V3's sigmoid + bias on CUDA), else by the rule's descriptor (gating/registry.ts) on the native router
 * logits, with the training randomness (jitter, exploration, noise, random routing) drawn in a fixed order.
 */
import { capabilities } from './capabilities';
import * as gating from './gating';
import { routingRuleOf } from './gating/registry';
import type { BuiltInRouting, RoutingRule } from './gating/rule';
import { checkSigmoidBiasOptions } from './gating/sigmoid-bias';
import { ResolvedConfig } from './layer-config';
import { Routing } from './layer-output';
import { NativeLayer } from './native';
import { Random } from './random';

export class LayerRouter {
  private readonly rule: RoutingRule;
  /** What the native core runs by itself for this config and backend (the spec's routing), or undefined: decided once. */
  readonly builtIn: BuiltInRouting | undefined;
  private readonly random: Random;
  private bias: Float64Array | undefined; // sigmoidBias: the selection bias, updatable (DeepSeek-V3 eq. 16)

  /** routerBias: [numExperts] added to the router logits (gpt-oss); the core's own routing has no bias, so then none. */
  constructor(
    private readonly config: Readonly<ResolvedConfig>,
    /** @internal */ readonly routerBias?: Float32Array,
  ) {
    this.rule = routingRuleOf(config.router.kind);
    this.builtIn = routerBias ? undefined : this.rule.builtIn?.(config.router, capabilities().backends[config.backend].offers);
    this.random = new Random(config.router.seed ?? 0);
    const r = config.router;
    if (r.kind === 'sigmoidBias' && r.bias) this.bias = Float64Array.from(r.bias);
  }

  /** Replaces the sigmoidBias selection bias (checked against the rule's options first). */
  setBias(bias: ArrayLike<number>): void {
    checkSigmoidBiasOptions({ ...this.config.router, k: this.config.topK, bias }, this.config.numExperts);
    this.bias = Float64Array.from(bias);
  }

  /** Whether the native core routes this forward by itself: never while training noise (exploration, jitter) applies. */
  isNative(training: boolean): boolean {
    const r = this.config.router;
    const noisy = training && ((r.explorationNoise ?? 0) > 0 || (r.jitter ?? 0) > 0);
    return !noisy && this.builtIn !== undefined;
  }

  /** Routes x [tokens, dModel] by the rule, on the layer's router logits. */
  route(handle: NativeLayer, x: Float32Array, tokens: number, training: boolean) {
    const c = this.config;
    const r = c.router;
    const seed = () => this.random.nextUint32();
    const routerInput = training && (r.jitter ?? 0) > 0 ? gating.multiplicativeJitter(x, r.jitter!, seed()) : x;
    const logits = handle.routerLogits({ x: routerInput, tokens });
    const b = this.routerBias;
    if (b) for (let i = 0; i < logits.length; i++) logits[i] += b[i % b.length];
    const shape = [tokens, c.numExperts];
    const explored = training && (r.explorationNoise ?? 0) > 0;
    const l = {
      data: explored ? gating.explorationNoise({ data: logits, shape }, { scale: r.explorationNoise, seed: seed() }) : logits,
      shape,
    };
    const gate = this.rule.route({
      logits: l,
      router: r,
      topK: c.topK,
      training,
      seed,
      bias: this.bias,
      noiseLogits: () => ({ data: handle.noiseLogits({ x: routerInput, tokens }), shape }),
    });
    return { gate, logits, ranked: l.data, weights: Float32Array.from(gate.weights), routerInput };
  }

  /** The float64 gate of a natively routed forward, recomputed from its logits by the rule (the same choices). */
  nativeGate(routing: Routing): gating.GateResult {
    const { numExperts, topK, router } = this.config;
    const logits = { data: routing.logits.data, shape: [routing.logits.shape[0], numExperts] };
    const noNoise = (): never => {
      throw new Error('moe-kernels: internal: a built-in rule drew training randomness');
    };
    return this.rule.route({ logits, router, topK, training: false, seed: noNoise, noiseLogits: noNoise, bias: this.bias });
  }
}
