/**
 * What a routing rule is to an MoELayer: one descriptor per rule, exported by the rule's own file beside its
 * forward and backward, and collected in one table (registry.ts). The layer routes in the core
 * (native/src/core/rules/, the same rule in float64 C++); the descriptor checks the rule's options, wraps the
 * core's result as this rule's public gate, and says what the backend may run fused. Adding a rule is its file here
 * and its line in the table, its file and table entry in the core, and its tests.
 */
import type { Feature } from '../capabilities';
import type { NativeGate } from '../native';
import type { GateResult } from './common';

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
  /**
   * The core's result of this rule (moe::rules::Gate) as the gate this rule's function returns, registered for
   * its backward: what a layer's forward hands back as routing.gate.
   */
  fromCore(gate: NativeGate): GateResult;
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
