/**
 * How an MoELayer routes: the `router` option of its config, one of the rules in gating/, plus the
 * exploration and stability options that apply while training.
 */
import { describe, rangeError, typeError } from './errors';
import * as gating from './gating';
import { checkCapacityFactor } from './gating/capacity';
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

export type RouterConfig = Common &
  (
    | { kind: 'topK'; order?: 'softmax-topk' | 'topk-softmax'; normalize?: boolean; tieBreak?: gating.TieBreak; capacityFactor?: number; dropPolicy?: gating.DropPolicy }
    | { kind: 'soft' }
    | { kind: 'switch'; capacityFactor?: number; dropPolicy?: gating.DropPolicy }
    | { kind: 'noisyTopK'; noiseEpsilon?: number; tieBreak?: gating.TieBreak; capacityFactor?: number; dropPolicy?: gating.DropPolicy }
    | { kind: 'gshardTop2'; capacityFactor?: number; groupSize?: number; randomRouting?: boolean }
    | { kind: 'expertChoice'; capacityFactor?: number }
    | { kind: 'sigmoidBias'; numGroups?: number; topKGroups?: number; routeScale?: number; normalize?: boolean; bias?: ArrayLike<number> }
  );

export type RouterKind = RouterConfig['kind'];
export const ROUTER_KINDS: readonly RouterKind[] = ['topK', 'soft', 'switch', 'noisyTopK', 'gshardTop2', 'expertChoice', 'sigmoidBias'];

/** The experts per token a kind implies, or undefined when config.topK decides. */
export function impliedTopK(kind: RouterKind, numExperts: number): number | undefined {
  switch (kind) {
    case 'soft': return numExperts;
    case 'switch': return 1;
    case 'gshardTop2': return 2;
    default: return undefined;
  }
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
  if (r.kind === 'topK' && r.order === 'topk-softmax' && r.normalize === false)
    throw rangeError("config.router.normalize: false only with order 'softmax-topk'", "order 'topk-softmax'");
  if (r.kind === 'sigmoidBias') {
    // Run the rule once on dummy logits: the same checks (groups dividing E, topKGroups, k, bias length).
    gating.sigmoidBias({ data: new Float64Array(numExperts), shape: [1, numExperts] }, { ...r, k: topK });
    if (r.bias !== undefined) r.bias = Float64Array.from(r.bias);
  }
  return Object.freeze(r);
}
