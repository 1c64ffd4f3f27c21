/**
 * The float64 backward of the expert part of a layer: the oracle the native backward will be tested against
 * (issue 19), itself checked by finite differences. For routed slots (t, j) with expert e and weight w and every
 * shared expert s (weight 1, or sigmoid(x . gate_s)):
 *   h1 = x W1^T + b1, h3 = x W3^T + b3, a = act(h1) * h3 (gated; act(h1) otherwise), y = a W2^T + b2,
 *   out_t = sum_j w_j y_j + sum_s g_s y_s.
 * Given dL/dout it returns dL/dx, dL/dW1, dW3, dW2, db1, db3, db2 (and the shared experts' and gate's), and
 * dL/dw_j = <dL/dout_t, y_j> for the router's backward (gating's <rule>Backward).
 */
import { Activation, isGated } from '../activation';
import { erf } from '../math';
import { activationFunction as activationFunctionOf } from './activation';
import { ReferenceConfig, ReferenceWeights, referenceExpertPass } from './moe';

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

/** d act / dx of each elementwise activation (for a gated one, of the function applied to the gate). */
export function activationDerivative(activation: Activation): (x: number) => number {
  switch (activation) {
    case 'swiglu':
    case 'swiglu-clamped':
    case 'silu':
      return (x) => {
        const s = sigmoid(x);
        return s * (1 + x * (1 - s));
      };
    case 'geglu':
    case 'gelu':
      return (x) => 0.5 * (1 + erf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);
    case 'gelu-tanh':
      return (x) => {
        const c = Math.sqrt(2 / Math.PI);
        const t = Math.tanh(c * (x + 0.044715 * x * x * x));
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x);
      };
    case 'relu':
      return (x) => (x > 0 ? 1 : 0);
    case 'identity':
      return () => 1;
  }
}

/**
 * The gated unit's partial derivatives at (g, u): [d/dg, d/du]. For 'swiglu-clamped' (gpt-oss) the clamps pass
 * the gradient where their input is inside the range, bounds included (as torch.clamp's backward does).
 */
export function gatedUnitDerivative(activation: Activation, alpha = 1.702, limit = 7): (g: number, u: number) => [number, number] {
  if (activation === 'swiglu-clamped')
    return (g, u) => {
      const gc = Math.min(g, limit);
      const uc = Math.max(Math.min(u, limit), -limit);
      const s = sigmoid(alpha * gc);
      const dg = g <= limit ? (s + alpha * gc * s * (1 - s)) * (uc + 1) : 0;
      const du = u >= -limit && u <= limit ? gc * s : 0;
      return [dg, du];
    };
  const act = activationFunctionOf(activation);
  const d = activationDerivative(activation);
  return (g, u) => [d(g) * u, act(g)];
}

export interface ExpertGradients {
  dw1: Float64Array;
  dw3: Float64Array | null;
  dw2: Float64Array;
  db1: Float64Array;
  db3: Float64Array | null;
  db2: Float64Array;
}

export interface ReferenceBackward extends ExpertGradients {
  /** [tokens, dModel] */
  dx: Float64Array;
  /** [tokens * k]: dL/d(routing weight) of each slot (0 for dropped ones) */
  dWeights: Float64Array;
  shared?: ExpertGradients & { dGate: Float64Array | null };
}

function zeros(count: number, h: number, d: number, gated: boolean): ExpertGradients {
  return {
    dw1: new Float64Array(count * h * d),
    dw3: gated ? new Float64Array(count * h * d) : null,
    dw2: new Float64Array(count * d * h),
    db1: new Float64Array(count * h),
    db3: gated ? new Float64Array(count * h) : null,
    db2: new Float64Array(count * d),
  };
}

/**
 * One expert on one token, forward and backward: adds weight * its gradients into g and dx (at xOffset), and
 * returns y (the expert's output, unweighted) for dL/dweight.
 */
function expertBackward(
  x: ArrayLike<number>,
  xOffset: number,
  e: number,
  w: ReferenceWeights,
  c: ReferenceConfig & { dHidden: number },
  weight: number,
  dOut: ArrayLike<number>,
  dOffset: number,
  g: ExpertGradients,
  dx: Float64Array,
): Float64Array {
  const { dModel: d, dHidden: h } = c;
  const gated = isGated(c.activation);
  const dUnit = gatedUnitDerivative(c.activation, c.swigluAlpha, c.swigluLimit);
  const dAct = activationDerivative(c.activation);
  const { g: h1, u: h3, a, y } = referenceExpertPass(x, xOffset, e, w, c);
  // dy = weight * dOut_t; dW2 += dy a^T; db2 += dy; da = W2^T dy
  const da = new Float64Array(h);
  for (let i = 0; i < d; i++) {
    const dy = weight * dOut[dOffset + i];
    g.db2[e * d + i] += dy;
    for (let j = 0; j < h; j++) {
      g.dw2[(e * d + i) * h + j] += dy * a[j];
      da[j] += w.w2[(e * d + i) * h + j] * dy;
    }
  }
  for (let j = 0; j < h; j++) {
    let d1: number;
    let d3 = 0;
    if (gated) [d1, d3] = dUnit(h1[j], h3[j]).map((v) => v * da[j]) as [number, number];
    else d1 = dAct(h1[j]) * da[j];
    g.db1[e * h + j] += d1;
    if (g.db3) g.db3[e * h + j] += d3;
    const base = (e * h + j) * d;
    for (let i = 0; i < d; i++) {
      g.dw1[base + i] += d1 * x[xOffset + i];
      if (g.dw3) g.dw3[base + i] += d3 * x[xOffset + i];
      dx[xOffset + i] += d1 * w.w1[base + i] + (gated ? d3 * w.w3![base + i] : 0);
    }
  }
  return y;
}

/** The backward of referenceExperts (same arguments) for dL/dout = dOut [tokens, dModel]. */
export function referenceExpertsBackward(
  x: ArrayLike<number>,
  tokens: number,
  w: ReferenceWeights,
  c: ReferenceConfig,
  k: number,
  experts: ArrayLike<number>,
  weights: ArrayLike<number>,
  dOut: ArrayLike<number>,
  shared?: { weights: ReferenceWeights; count: number; dHidden: number; gate?: ArrayLike<number> | null },
): ReferenceBackward {
  const d = c.dModel;
  const gated = isGated(c.activation);
  const routed = zeros(c.numExperts, c.dHidden, d, gated);
  const dx = new Float64Array(tokens * d);
  const dWeights = new Float64Array(tokens * k);
  const sg = shared
    ? { ...zeros(shared.count, shared.dHidden, d, gated), dGate: shared.gate ? new Float64Array(shared.count * d) : null }
    : undefined;
  for (let t = 0; t < tokens; t++) {
    for (let j = 0; j < k; j++) {
      const e = experts[t * k + j];
      if (e < 0) continue;
      const y = expertBackward(x, t * d, e, w, { ...c }, weights[t * k + j], dOut, t * d, routed, dx);
      let dot = 0;
      for (let i = 0; i < d; i++) dot += dOut[t * d + i] * y[i];
      dWeights[t * k + j] = dot;
    }
    for (let s = 0; s < (shared?.count ?? 0); s++) {
      let gate = 1;
      let z = 0;
      if (shared!.gate) {
        for (let i = 0; i < d; i++) z += x[t * d + i] * shared!.gate[s * d + i];
        gate = sigmoid(z);
      }
      const y = expertBackward(x, t * d, s, shared!.weights, { ...c, dHidden: shared!.dHidden }, gate, dOut, t * d, sg!, dx);
      if (shared!.gate) {
        // out += sigmoid(z) y: dL/dz = sigmoid'(z) <dOut, y>, z = x . gate_s
        let dot = 0;
        for (let i = 0; i < d; i++) dot += dOut[t * d + i] * y[i];
        const dz = gate * (1 - gate) * dot;
        for (let i = 0; i < d; i++) {
          sg!.dGate![s * d + i] += dz * x[t * d + i];
          dx[t * d + i] += dz * shared!.gate[s * d + i];
        }
      }
    }
  }
  return { ...routed, dx, dWeights, ...(sg ? { shared: sg } : {}) };
}
