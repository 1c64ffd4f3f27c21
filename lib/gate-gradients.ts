/**
 * Router training by hand (`layer.gateGradients`, for training loops of one's own): the gradient paths of the router
 * (Shazeer et al.: the gate is trained by back-propagation with the rest) from dL/d(output) through the routing
 * weights and the rule's TypeScript backward, plus every aux loss, to dL/dW_g (and dL/dW_noise). `layer.backward`
 * computes the same in the core, in its one call.
 */
import { describe, rangeError, typeError } from './errors';
import * as gating from './gating';
import { isMadeGate } from './gating/common';
import { ruleOfGate } from './gating/registry';
import { MoEOutput, Routing } from './layer-output';
import { Tensor } from './tensor';
import { expectTensor } from './validate';

export interface GateGradients {
  /** dL/d(slot weights) [T * topK] from gradOutput (absent without it). */
  gradWeights?: Float64Array;
  /** dL/d(router logits) [T, E]: the task loss through the router's backward, plus every aux loss. */
  gradLogits: Float64Array;
  /** dL/dW_g [E, dModel]. */
  gradRouter: Float64Array;
  /** Noisy top-k only: dL/d(x W_noise^T) [T, E] and dL/dW_noise [E, dModel]. */
  gradNoiseLogits?: Float64Array;
  gradNoiseRouter?: Float64Array;
}

/**
 * The router's gradients for `result`, a forward of x by a layer of config `c`: `weightGradients` gives dL/d(routing
 * weight) per slot, <dL/dy_t, E_s(x_t)> (in the core); `defaultGate` recomputes the gate of native routing. The
 * choices, dropping and sampled noise of that forward are held fixed.
 */
export function gateGradients(
  c: { dModel: number; numExperts: number; topK: number },
  x: Tensor,
  result: MoEOutput,
  gradOutput: Tensor | undefined,
  weightGradients: (x: Tensor, routing: Routing, gradOutput: Float32Array) => Float64Array,
  defaultGate: (routing: Routing) => gating.GateResult,
): GateGradients {
  if (typeof result !== 'object' || result === null || typeof result.routing !== 'object' || result.routing === null)
    throw typeError("result to be the result of this layer's forward", describe(result));
  const { routing } = result;
  const logits = expectTensor(routing.logits, 'result.routing.logits', ['float32'], [null, c.numExperts], ['tokens', 'numExperts']);
  expectTensor(x, 'x', ['float32'], [logits.shape[0], c.dModel], ['tokens', 'dModel']);
  if (routing.topK !== c.topK && routing.gate === undefined)
    throw rangeError(`result.routing.topK = ${c.topK} (this layer's)`, describe(routing.topK));
  // A gate carries the state its rule's backward reads: only the one a forward returned will do.
  if (routing.gate !== undefined) {
    ruleOfGate(routing.gate);
    if (!isMadeGate(routing.gate))
      throw typeError("result.routing.gate to be the gate this layer's forward returned", 'a copy or a hand-made object');
  }
  const gate = routing.gate ?? defaultGate(routing);
  const { tokens, numExperts } = gate;
  const gradLogits = new Float64Array(tokens * numExperts);
  const gradNoiseLogits: Float64Array | undefined = ruleOfGate(gate).usesNoiseRouter ? new Float64Array(tokens * numExperts) : undefined;
  let gradWeights: Float64Array | undefined;
  if (gradOutput !== undefined) {
    const g = expectTensor(gradOutput, 'gradOutput', ['float32'], [tokens, c.dModel], ['tokens', 'dModel']).data;
    for (let i = 0; i < g.length; i++)
      if (!Number.isFinite(g[i]))
        throw rangeError('gradOutput to contain only finite values', `${g[i]} at gradOutput[${Math.floor(i / c.dModel)}, ${i % c.dModel}]`);
    gradWeights = weightGradients(x, routing, g);
    const b = gating.backward(gate, gradWeights);
    add(gradLogits, b.gradLogits);
    if (b.gradNoiseLogits) add(gradNoiseLogits!, b.gradNoiseLogits);
  }
  for (const aux of Object.values(result.auxLosses ?? {})) {
    add(gradLogits, aux.gradLogits);
    if (aux.gradNoiseLogits) add(gradNoiseLogits!, aux.gradNoiseLogits);
  }
  const input = { data: routing.routerInput, shape: [tokens, c.dModel] };
  const out: GateGradients = { gradLogits, gradRouter: gating.routerWeightGradient(gradLogits, input) };
  if (gradWeights) out.gradWeights = gradWeights;
  if (gradNoiseLogits) {
    out.gradNoiseLogits = gradNoiseLogits;
    out.gradNoiseRouter = gating.routerWeightGradient(gradNoiseLogits, input);
  }
  return out;
}

function add(into: Float64Array, from: ArrayLike<number>): void {
  for (let i = 0; i < into.length; i++) into[i] += from[i];
}
