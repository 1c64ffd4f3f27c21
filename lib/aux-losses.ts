/**
 * The balance losses a layer computes on request (`forward(x, { auxLosses })`), each as its value and its
 * gradient with respect to the router logits, so that they can be added to the task loss's gradient.
 */
import { describe, rangeError, typeError } from './errors';
import * as gating from './gating';
import { checkMatrix, softmaxRows } from './gating/common';
import * as losses from './losses';
import { Variance } from './losses/cv-squared';
import { expectOneOf } from './validate';

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

/** Computes the requested losses for one routing. `logits` are the logits the router ranked. */
export function computeAuxLosses(
  specs: readonly AuxLossSpec[],
  gate: gating.GateResult,
  logits: ArrayLike<number>,
): Partial<Record<AuxLossKind, AuxLoss>> {
  if (!Array.isArray(specs)) throw typeError('options.auxLosses to be an array of loss names or specs', describe(specs));
  const { tokens: T, numExperts: E } = gate;
  const shape = [T, E];
  // The softmax of each row, O(T E) (soft routing's probabilities, without ranking every expert).
  const probs = softmaxRows(checkMatrix({ data: logits, shape }, 'logits').data, T, E);
  const firstChoice = Int32Array.from({ length: T }, (_, t) => gate.experts[t * gate.topK]);
  const out: Partial<Record<AuxLossKind, AuxLoss>> = {};
  for (const raw of specs) {
    const spec = (typeof raw === 'string' ? { kind: raw } : raw) as { kind: AuxLossKind } & Record<string, unknown>;
    const kind = expectOneOf(spec?.kind, 'auxLosses[].kind', AUX_LOSS_KINDS);
    const c = (spec.coefficient as number | undefined) ?? 1;
    if (typeof c !== 'number' || !Number.isFinite(c) || c < 0)
      throw rangeError(`auxLosses ${kind} coefficient to be a finite number >= 0`, describe(c));
    const scaled = (g: Float64Array) => g.map((v) => v * c);
    switch (kind) {
      case 'importance': {
        const r = losses.importanceLoss(gate, { variance: spec.variance as Variance | undefined, coefficient: c });
        out.importance = { value: r.value, ...gating.backward(gate, r.grad) };
        break;
      }
      case 'load': {
        if (gate.kind !== 'noisyTopK')
          throw rangeError("the 'load' loss with router 'noisyTopK' (the smooth estimator needs its noise)", `router '${gate.kind}'`);
        const r = losses.loadLoss(gate as gating.NoisyTopKGate, { variance: spec.variance as Variance | undefined, coefficient: c });
        out.load = { value: r.value, gradLogits: r.gradCleanLogits, gradNoiseLogits: r.gradNoiseLogits };
        break;
      }
      case 'switch': {
        const r = losses.switchLoss({ data: probs, shape }, firstChoice, { alpha: spec.alpha as number | undefined });
        out.switch = { value: r.value, gradLogits: losses.softmaxBackward(probs, r.gradProbs, E) };
        break;
      }
      case 'gshard': {
        const r = losses.gshardLoss({ data: probs, shape }, firstChoice, { scale: spec.scale as 'deepspeed' | 'paper' | undefined });
        out.gshard = { value: c * r.value, gradLogits: scaled(losses.softmaxBackward(probs, r.gradProbs, E)) };
        break;
      }
      case 'mixtral': {
        const k = Math.min(gate.topK, E);
        const r = losses.mixtralLoss([{ data: logits, shape }], E, k);
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
        const r = losses.sequenceBalanceLoss(
          { data: scores, shape },
          gate.topK,
          spec.sequenceLength as number,
          (spec.alpha as number | undefined) ?? 1e-4,
          { experts: gate.experts },
        );
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
