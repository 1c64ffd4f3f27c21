/**
 * What an MoELayer knows of its routing rule. The routing itself runs in the core, for every rule
 * (native/src/core/rules/, moe/layer_router.h: router logits, bias, jitter, exploration noise, the rule, its
 * training randomness from the layer's seed, and the rule's backward): this says which rule with which options,
 * what the backend may run fused (its built-in rule), and wraps the core's result as the rule's public gate.
 */
import { capabilities } from './capabilities';
import * as gating from './gating';
import { routingRuleOf } from './gating/registry';
import type { BuiltInRouting } from './gating/rule';
import { checkSigmoidBiasOptions } from './gating/sigmoid-bias';
import { ResolvedConfig } from './layer-config';
import type { NativeDraws, NativeGate, NativeLayer, NativeRouterSpec } from './native';

export class LayerRouter {
  /** What the backend runs fused in its own forward for this config, or undefined: decided once. */
  readonly builtIn: BuiltInRouting | undefined;
  /** sigmoidBias's selection bias as the core has it now (replaced, never changed in place: records keep old ones). */
  selectionBias: Float64Array | undefined;
  /** routerBias: [numExperts] added to the router logits (gpt-oss); the fused routing has no bias, so then none. */
  constructor(
    private readonly config: Readonly<ResolvedConfig>,
    /** @internal (updated in place by an optimizer step, then handed to the core with pushRouterBias) */
    readonly routerBias?: Float32Array,
  ) {
    const rule = routingRuleOf(config.router.kind);
    this.builtIn = routerBias ? undefined : rule.builtIn?.(config.router, capabilities().backends[config.backend].offers);
    const bias = config.router.kind === 'sigmoidBias' ? config.router.bias : undefined;
    this.selectionBias = bias ? Float64Array.from(bias) : undefined;
  }

  /** The rule as the core reads it (NativeRouterSpec): the options config.router has, with their defaults. */
  nativeSpec(): NativeRouterSpec {
    const r = this.config.router as Readonly<Record<string, unknown>> & { kind: string };
    const grouped = r.kind === 'topK' || r.kind === 'sigmoidBias'; // (the only rules with groups and a scale)
    const numGroups = grouped ? ((r.numGroups as number | undefined) ?? 1) : 1;
    return {
      kind: r.kind,
      normalize: (r.normalize as boolean | undefined) ?? true,
      tiesHigher: r.tieBreak === 'higher',
      capacityFactor: (r.capacityFactor as number | undefined) ?? 0,
      dropByScore: r.dropPolicy === 'score',
      numGroups,
      topKGroups: grouped ? ((r.topKGroups as number | undefined) ?? numGroups) : 1,
      routeScale: grouped ? ((r.routeScale as number | undefined) ?? 1) : 1,
      noiseEpsilon: (r.noiseEpsilon as number | undefined) ?? 1e-2,
      groupSize: (r.groupSize as number | undefined) ?? 0,
      randomRouting: (r.randomRouting as boolean | undefined) ?? true,
      explorationNoise: (r.explorationNoise as number | undefined) ?? 0,
      jitter: (r.jitter as number | undefined) ?? 0,
      seed: (r.seed as number | undefined) ?? 0,
      routerBias: this.routerBias ? Float32Array.from(this.routerBias) : null,
      selectionBias: this.selectionBias ?? null,
    };
  }

  /** Replaces the sigmoidBias selection bias in the core (checked against the rule's options first). */
  setBias(handle: NativeLayer, bias: ArrayLike<number>): void {
    checkSigmoidBiasOptions({ ...this.config.router, k: this.config.topK, bias }, this.config.numExperts);
    const selectionBias = Float64Array.from(bias);
    handle.setBiases({ selectionBias });
    this.selectionBias = selectionBias;
  }

  /** Hands the router bias, as an optimizer step left it, to the core. */
  pushRouterBias(handle: NativeLayer): void {
    if (this.routerBias) handle.setBiases({ routerBias: this.routerBias });
  }

  /** The core's gate as the rule's public one (registered for gating.backward). */
  gateFromCore(gate: NativeGate): gating.GateResult {
    return routingRuleOf(this.config.router.kind).fromCore(gate);
  }

  /**
   * The gate of a forward of x that returned these logits and draws (with this selection bias), routed again by the
   * rule in the core: the same choices, drops and noise.
   */
  gateOf(
    handle: NativeLayer,
    x: Float32Array,
    logits: Float32Array,
    draws: NativeDraws,
    selectionBias: Float64Array | undefined,
  ): gating.GateResult {
    const tokens = logits.length / this.config.numExperts;
    return this.gateFromCore(handle.gateOf({ x, logits, tokens, draws, selectionBias }));
  }
}
