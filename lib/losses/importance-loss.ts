import { describe, typeError } from '../errors';
import { GateResult, Matrix, checkMatrix, isMadeGate } from '../gating/common';
import { expectNonNegative, expectOptions } from '../validate';
import { Variance, cvSquared } from './cv-squared';

function isGate(g: unknown): g is GateResult {
  return typeof g === 'object' && g !== null && 'experts' in g && 'weights' in g && 'topK' in g;
}

/**
 * Shazeer et al. eqs. 6-7: Importance(X) = sum over tokens of the gate values G(x) (after top-k and softmax),
 * loss = coefficient * CV(Importance)^2. `gates` is a router's result (gradient per slot weight, [T * k], ready
 * for that router's backward) or a dense [T, E] matrix of gate values (gradient [T, E]).
 */
export function importanceLoss(gates: GateResult | Matrix, options: { variance?: Variance; coefficient?: number } = {}) {
  options = expectOptions(options, 'options') as { variance?: Variance; coefficient?: number };
  const coefficient = expectNonNegative(options.coefficient ?? 1, 'options.coefficient');
  if (isGate(gates)) {
    if (!isMadeGate(gates))
      throw typeError(
        'gates to be a router result as the router returned it, or a [tokens, numExperts] matrix',
        'a copy or a hand-made gate',
      );
    const importance = new Float64Array(gates.numExperts);
    gates.experts.forEach((e, s) => {
      if (e >= 0) importance[e] += gates.weights[s];
    });
    const cv = cvSquared(importance, options);
    const grad = Float64Array.from(gates.experts, (e) => (e >= 0 ? coefficient * cv.grad[e] : 0));
    return { value: coefficient * cv.value, importance, grad };
  }
  if (typeof gates !== 'object' || gates === null)
    throw typeError('gates to be a router result or a [tokens, numExperts] matrix', describe(gates));
  const { data, tokens, numExperts: n } = checkMatrix(gates, 'gates');
  const importance = new Float64Array(n);
  for (let t = 0; t < tokens; t++) for (let e = 0; e < n; e++) importance[e] += data[t * n + e];
  const cv = cvSquared(importance, options);
  const grad = new Float64Array(tokens * n);
  for (let t = 0; t < tokens; t++) for (let e = 0; e < n; e++) grad[t * n + e] = coefficient * cv.grad[e];
  return { value: coefficient * cv.value, importance, grad };
}
