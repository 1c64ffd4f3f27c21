/**
 * What a routing rule is to an MoELayer: one descriptor per rule, exported by the rule's own file beside its
 * forward and backward, and collected in one table (registry.ts). Adding a rule is one new file (the rule, its
 * backward, its descriptor) plus its line in the table and its tests.
 */
import type { Feature } from '../capabilities';
import type { GateResult, Matrix } from './common';

/** What a layer hands a rule on each forward. */
export interface RouteContext<C> {
  /** [tokens, numExperts] router logits (exploration noise already added while training). */
  logits: Matrix;
  /** The layer's router config (config.router), checked by checkConfig. */
  router: Readonly<C>;
  /** Experts per token, as the layer resolved it. */
  topK: number;
  training: boolean;
  /** The next seed of the layer's training randomness (one per draw, in a fixed order). */
  seed(): number;
  /** [tokens, numExperts] x W_noise^T: the noise router's logits, for rules with usesNoiseRouter. */
  noiseLogits(): Matrix;
  /** The current selection bias of rules that keep one (sigmoidBias; updatable with setRouterBias). */
  bias: Float64Array | undefined;
}

/** The rule the native core runs by itself in a layer's own forward (moe::BuiltInRouting); 'none': never. */
export interface BuiltInRouting {
  rule: 'softmax' | 'sigmoidBias' | 'none';
  numGroups: number;
  topKGroups: number;
  routeScale: number;
  bias: Float32Array | null;
}

export interface RoutingRule<C extends { kind: string } = { kind: string }> {
  kind: C['kind'];
  /**
   * The experts per token the rule implies for numExperts (soft: all, switch: 1), 'experts choose' when a token
   * has no fixed count (config.topK is then refused), or undefined when config.topK decides.
   */
  impliedTopK?: (numExperts: number) => number | 'experts choose';
  /** Whether the layer needs weights.noiseRouter (W_noise). */
  usesNoiseRouter?: boolean;
  /**
   * Checks this rule's own options of config.router, once, when a layer is built; may return the config to keep
   * instead (with array options copied: a later change to the caller's array must not change later forwards).
   */
  checkConfig?: (router: Readonly<C>, numExperts: number, topK: number) => C | void;
  /** Routes one forward's logits. */
  route(context: RouteContext<C>): GateResult;
  /** dL/dlogits [T, E] (and dL/d(noise logits)) from dL/dweights [T * topK], for a gate this rule made. */
  backward(gate: GateResult, gradWeights: ArrayLike<number>): { gradLogits: Float64Array; gradNoiseLogits?: Float64Array };
  /**
   * When the native core can route this config by itself on a backend that offers `offers` (its table in the core:
   * lib/capabilities.ts), what it runs; undefined otherwise (no TypeScript round trip). Consulted only outside
   * training noise.
   */
  builtIn?: (router: Readonly<C>, offers: readonly Feature[]) => BuiltInRouting | undefined;
}

/** A descriptor, typed by its config (the table's entries keep their own config type). */
export function routingRule<C extends { kind: string }>(rule: RoutingRule<C>): RoutingRule<C> {
  return rule;
}
