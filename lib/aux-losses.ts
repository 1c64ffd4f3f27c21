/**
 * The balance losses a layer computes on request (`forward(x, { auxLosses })`), each as its value and its
 * gradient with respect to the router logits, so that they can be added to the task loss's gradient. They are
 * computed in the core with the forward, off the event loop (native/src/core/losses/, in float64); lib/losses has
 * each as a public function, the reference (`referenceAuxLosses` below is what the core computes, in TypeScript).
 * Here: the list's checks, against the layer and the call, before the forward runs.
 */
import { describe, rangeError, typeError } from './errors';
import * as gating from './gating';
import { checkMatrix, softmaxRows } from './gating/common';
import * as losses from './losses';
import { Variance } from './losses/cv-squared';
import type { NativeAuxLoss, NativeAuxLossSpec } from './native';
import { expectInteger, expectOneOf } from './validate';

export const AUX_LOSS_KINDS = ['importance', 'load', 'switch', 'gshard', 'mixtral', 'zLoss', 'sequence'] as const;
export type AuxLossKind = (typeof AUX_LOSS_KINDS)[number];

/** A loss by name, or with options: `coefficient` scales value and gradient (default 1; 'switch' uses alpha). */
export type AuxLossSpec =
  | AuxLossKind
  | { kind: 'importance' | 'load'; coefficient?: number; variance?: Variance }
  | { kind: 'switch'; alpha?: number }
  | { kind: 'gshard'; coefficient?: number; scale?: 'deepspeed' | 'paper' }
  | { kind: 'mixtral' | 'zLoss'; coefficient?: number }
  | { kind: 'sequence'; sequenceLength: number; alpha?: number };

export interface AuxLoss {
  value: number;
  /** dL/d(router logits) [T, E] (the clean logits for noisy top-k). */
  gradLogits: Float64Array;
  /** dL/d(x W_noise^T) [T, E], noisy top-k only. */
  gradNoiseLogits?: Float64Array;
}

/** What a forward's losses are checked against. */
export interface AuxLossContext {
  router: string;
  training: boolean;
  tokens: number;
  numExperts: number;
  topK: number;
}

/** Checks a forward's auxLosses and returns them as the core reads them, in order, with their defaults. */
export function resolveAuxLosses(specs: unknown, ctx: AuxLossContext): NativeAuxLossSpec[] {
  if (!Array.isArray(specs)) throw typeError('options.auxLosses to be an array of loss names or specs', describe(specs));
  return specs.map((raw: unknown) => {
    const spec = (typeof raw === 'string' ? { kind: raw } : raw) as { kind: AuxLossKind } & Record<string, unknown>;
    const kind = expectOneOf(spec?.kind, 'auxLosses[].kind', AUX_LOSS_KINDS);
    const coefficient = (spec.coefficient as number | undefined) ?? 1;
    if (typeof coefficient !== 'number' || !Number.isFinite(coefficient) || coefficient < 0)
      throw rangeError(`auxLosses ${kind} coefficient to be a finite number >= 0`, describe(coefficient));
    const variance = expectOneOf(spec.variance ?? 'population', `auxLosses ${kind} variance`, ['population', 'sample'] as const);
    const alpha = (spec.alpha as number | undefined) ?? (kind === 'sequence' ? 1e-4 : 1e-2);
    if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha < 0)
      throw rangeError(`auxLosses ${kind} alpha to be a finite number >= 0`, describe(alpha));
    const scale = expectOneOf(spec.scale ?? 'deepspeed', `auxLosses ${kind} scale`, ['deepspeed', 'paper'] as const);
    let sequenceLength = 0;
    if (kind === 'load') {
      if (ctx.router !== 'noisyTopK')
        throw rangeError("the 'load' loss with router 'noisyTopK' (the smooth estimator needs its noise)", `router '${ctx.router}'`);
      if (!ctx.training) throw rangeError("the 'load' loss in a training forward (the estimator needs noise)", 'training: false');
      if (ctx.topK >= ctx.numExperts)
        throw rangeError(`k < numExperts = ${ctx.numExperts} for the 'load' loss's smooth estimator`, `k = ${ctx.topK}`);
    }
    if (kind === 'sequence') {
      sequenceLength = expectInteger(spec.sequenceLength, 'auxLosses sequence sequenceLength');
      if (ctx.tokens % sequenceLength !== 0)
        throw rangeError(`tokens (${ctx.tokens}) to be a multiple of sequenceLength`, `${sequenceLength}`);
    }
    return { kind, coefficient, sampleVariance: variance === 'sample', alpha, paperScale: scale === 'paper', sequenceLength };
  });
}

/** The core's losses as the forward's result has them: by kind, in the order asked (a kind asked twice: the last). */
export function auxLossesOf(
  specs: readonly NativeAuxLossSpec[],
  computed: readonly NativeAuxLoss[],
): Partial<Record<AuxLossKind, AuxLoss>> {
  const out: Partial<Record<AuxLossKind, AuxLoss>> = {};
  specs.forEach((spec, i) => {
    const c = computed[i];
    const loss: AuxLoss = { value: c.value, gradLogits: c.gradLogits };
    if (c.gradNoiseLogits) loss.gradNoiseLogits = c.gradNoiseLogits;
    out[spec.kind as AuxLossKind] = loss;
  });
  return out;
}

/**
 * The same losses computed in TypeScript from a forward's gate and the logits its rule ranked, with lib/losses and
 * the rule's backward: the reference the core's are tested against (test/core-losses.test.ts).
 */
export function referenceAuxLosses(
  specs: readonly NativeAuxLossSpec[],
  gate: gating.GateResult,
  logits: ArrayLike<number>,
): Partial<Record<AuxLossKind, AuxLoss>> {
  const { tokens: T, numExperts: E } = gate;
  const shape = [T, E];
  const probs = softmaxRows(checkMatrix({ data: logits, shape }, 'logits').data, T, E);
  const firstChoice = Int32Array.from({ length: T }, (_, t) => gate.experts[t * gate.topK]);
  const out: Partial<Record<AuxLossKind, AuxLoss>> = {};
  for (const spec of specs) {
    const c = spec.coefficient;
    const variance: Variance = spec.sampleVariance ? 'sample' : 'population';
    const scaled = (g: Float64Array) => g.map((v) => v * c);
    switch (spec.kind as AuxLossKind) {
      case 'importance': {
        const r = losses.importanceLoss(gate, { variance, coefficient: c });
        out.importance = { value: r.value, ...gating.backward(gate, r.grad) };
        break;
      }
      case 'load': {
        const r = losses.loadLoss(gate as gating.NoisyTopKGate, { variance, coefficient: c });
        out.load = { value: r.value, gradLogits: r.gradCleanLogits, gradNoiseLogits: r.gradNoiseLogits };
        break;
      }
      case 'switch': {
        const r = losses.switchLoss({ data: probs, shape }, firstChoice, { alpha: spec.alpha });
        out.switch = { value: r.value, gradLogits: losses.softmaxBackward(probs, r.gradProbs, E) };
        break;
      }
      case 'gshard': {
        const r = losses.gshardLoss({ data: probs, shape }, firstChoice, { scale: spec.paperScale ? 'paper' : 'deepspeed' });
        out.gshard = { value: c * r.value, gradLogits: scaled(losses.softmaxBackward(probs, r.gradProbs, E)) };
        break;
      }
      case 'mixtral': {
        const r = losses.mixtralLoss([{ data: logits, shape }], E, Math.min(gate.topK, E));
        out.mixtral = { value: c * r.value, gradLogits: scaled(r.gradLogits[0]) };
        break;
      }
      case 'zLoss': {
        const r = losses.zLoss({ data: logits, shape });
        out.zLoss = { value: c * r.value, gradLogits: scaled(r.gradLogits) };
        break;
      }
      case 'sequence': {
        // DeepSeek-V3 uses the sigmoid affinities; softmax routers use their probabilities.
        const sigmoid = gate.kind === 'sigmoidBias';
        const scores = sigmoid ? (gate as gating.SigmoidBiasGate).scores : probs;
        const r = losses.sequenceBalanceLoss({ data: scores, shape }, gate.topK, spec.sequenceLength, spec.alpha, {
          experts: gate.experts,
        });
        const gradLogits = sigmoid
          ? r.gradScores.map((g, i) => g * scores[i] * (1 - scores[i]))
          : losses.softmaxBackward(probs, r.gradScores, E);
        out.sequence = { value: r.value, gradLogits };
        break;
      }
    }
  }
  return out;
}
