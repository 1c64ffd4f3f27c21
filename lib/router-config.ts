/**
 * How an MoELayer routes: the `router` option of its config, one of the rules in gating/, plus the
 * exploration and stability options that apply while training.
 */
import { describe, rangeError, typeError } from './errors';
import { checkCapacityFactor } from './gating/capacity';
import { ROUTER_KINDS, RouterKind, RuleConfig, routingRuleOf } from './gating/registry';
import { DROP_POLICIES, TIE_BREAKS } from './gating/top-k';
import { expectBoolean, expectInteger, expectOneOf } from './validate';

interface Common {
  /** Training only: add U[0, explorationNoise) to the logits (Chen et al. 2022). */
  explorationNoise?: number;
  /** Training only: multiply the router's input by U(1 - jitter, 1 + jitter) (Switch Transformer). */
  jitter?: number;
  /** Seed of the layer's training randomness (noise, exploration, jitter, random routing). */
  seed?: number;
}

/** config.router: the common options plus those of one rule (each rule's file declares its own, registry.ts lists them). */
export type RouterConfig = Common & RuleConfig;

export type { RouterKind };
export { ROUTER_KINDS };

/** The experts per token a kind implies, 'experts choose' (expert choice), or undefined when config.topK decides. */
export function impliedTopK(kind: RouterKind, numExperts: number): number | 'experts choose' | undefined {
  return routingRuleOf(kind).impliedTopK?.(numExperts);
}

/** Checks a router config up front (the routers check again per call); returns a frozen copy. */
export function checkRouterConfig(router: unknown, numExperts: number, topK: number): Readonly<RouterConfig> {
  if (typeof router !== 'object' || router === null) throw typeError('config.router to be an object with a kind', describe(router));
  const r = { ...(router as RouterConfig) } as RouterConfig & Record<string, unknown>;
  expectOneOf(r.kind, 'config.router.kind', ROUTER_KINDS);
  for (const key of ['explorationNoise', 'jitter'] as const)
    if (r[key] !== undefined && (typeof r[key] !== 'number' || !Number.isFinite(r[key]) || (r[key] as number) < 0))
      throw rangeError(`config.router.${key} to be a finite number >= 0`, describe(r[key]));
  if (r.jitter !== undefined && r.jitter >= 1) throw rangeError('config.router.jitter < 1', `${r.jitter}`);
  if (r.seed !== undefined) expectInteger(r.seed, 'config.router.seed', 0, 2 ** 32 - 1);
  if (r.capacityFactor !== undefined) checkCapacityFactor(r.capacityFactor, 'config.router.capacityFactor');
  if (r.dropPolicy !== undefined) expectOneOf(r.dropPolicy, 'config.router.dropPolicy', DROP_POLICIES);
  if (r.tieBreak !== undefined) expectOneOf(r.tieBreak, 'config.router.tieBreak', TIE_BREAKS);
  if (r.normalize !== undefined) expectBoolean(r.normalize, 'config.router.normalize');
  const checked = routingRuleOf(r.kind).checkConfig?.(r, numExperts, topK) ?? r;
  return Object.freeze(checked as RouterConfig);
}
