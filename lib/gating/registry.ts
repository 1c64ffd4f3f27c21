/**
 * The routing rules, one table: MoELayer, the router config checks and gating.backward all read it. A new rule is
 * its file (exporting a descriptor, see rule.ts) and one line here.
 */
import { describe, typeError } from '../errors';
import type { RoutingRule } from './rule';
import { expertChoiceRule } from './expert-choice';
import { gshardTop2Rule } from './gshard-top2';
import { noisyTopKRule } from './noisy-top-k';
import { sigmoidBiasRule } from './sigmoid-bias';
import { softRule } from './soft';
import { switchRule } from './switch';
import { topKRule } from './top-k';

export const ROUTING_RULES = {
  topK: topKRule,
  soft: softRule,
  switch: switchRule,
  noisyTopK: noisyTopKRule,
  gshardTop2: gshardTop2Rule,
  expertChoice: expertChoiceRule,
  sigmoidBias: sigmoidBiasRule,
};

export type RouterKind = keyof typeof ROUTING_RULES;

/** The config.router of each rule, as its descriptor declares it. */
export type RuleConfig = { [K in RouterKind]: (typeof ROUTING_RULES)[K] extends RoutingRule<infer C> ? C : never }[RouterKind];

export const ROUTER_KINDS = Object.keys(ROUTING_RULES) as RouterKind[];

/** The descriptor of `kind` (checked by the caller to be one of ROUTER_KINDS). */
export function routingRuleOf(kind: RouterKind): RoutingRule<{ kind: string }> {
  return ROUTING_RULES[kind] as RoutingRule<{ kind: string }>;
}

/** The descriptor of the rule that made `gate`; a TypeError in the one format for anything else. */
export function ruleOfGate(gate: unknown): RoutingRule<{ kind: string }> {
  const kind = (gate as { kind?: unknown } | null | undefined)?.kind;
  if (typeof kind !== 'string' || !Object.prototype.hasOwnProperty.call(ROUTING_RULES, kind))
    throw typeError('gate to be a router result (with a kind)', describe(gate));
  return routingRuleOf(kind as RouterKind);
}
