/**
 * Shared pieces of the routers: the logits matrix they read, the result they return, softmax rows and
 * ranking with a tie rule. Routers compute in float64 so their backward passes can be checked by finite
 * differences.
 */
import { describe, rangeError, typeError } from '../errors';
import type { NativeGate } from '../native';
import { typedArrayTag } from '../typed-arrays';
import type { RouterKind } from './registry';

/** A [tokens, numExperts] matrix: any Tensor, or { data, shape } with a Float64Array for exact gradients. */
export interface Matrix {
  data: ArrayLike<number>;
  shape: readonly number[];
}

export type TieBreak = 'lower' | 'higher';

/** What every router returns. Slots are token-major: token t's slots are t * topK .. t * topK + topK - 1. */
export type GateKind = RouterKind;

export interface GateResult {
  /** The rule that made it (gating.backward dispatches on it). */
  kind: GateKind;
  /** Slots per token (for expert choice: the most experts any token got). */
  topK: number;
  /** [tokens * topK] expert of each slot, -1 for a dropped (or unused) slot. */
  experts: Int32Array;
  /** [tokens * topK] weight of each slot; 0 for dropped slots. */
  weights: Float64Array;
  /** [numExperts] slots each expert received, after dropping. */
  tokensPerExpert: Int32Array;
  /** Slots dropped by capacity. */
  dropped: number;
  tokens: number;
  numExperts: number;
}

// Every router's result, as it made it: a backward pass reads the state its router saved in the gate, so it
// takes only gates made here (a spread copy, a JSON round trip or a hand-made object lacks that state).
const madeGates = new WeakSet<object>();

/** Registers a router's result for its backward pass (checkGate). */
export function madeGate<G extends GateResult>(gate: G): G {
  madeGates.add(gate);
  return gate;
}

/** The fields every gate has, from the core's result (each rule's fromCore adds its own). */
export function coreGateBase(g: NativeGate): GateResult {
  return {
    kind: g.kind as GateKind,
    topK: g.topK,
    experts: g.experts,
    weights: g.weights,
    tokensPerExpert: g.tokensPerExpert,
    dropped: g.dropped,
    tokens: g.tokens,
    numExperts: g.numExperts,
  };
}

/** An array the core's gate of this rule always has (a null would be the binding's bug). */
export function kept<T>(value: T | null, name: string): T {
  if (value === null) throw new Error(`moe-kernels: internal: the core's gate has no ${name}`);
  return value;
}

/** Whether `gate` is a router's result as the router returned it. */
export function isMadeGate(gate: unknown): boolean {
  return typeof gate === 'object' && gate !== null && madeGates.has(gate);
}

/** A TypeError in the one format unless `gate` is a result of gating.<router>, as that router returned it. */
export function checkGate(gate: unknown, kind: GateKind, router: string): void {
  const got = (gate as { kind?: unknown } | null)?.kind;
  if (typeof gate !== 'object' || gate === null || got !== kind)
    throw typeError(`gate to be a result of gating.${router}`, typeof got === 'string' ? `a '${got}' result` : describe(gate));
  if (!madeGates.has(gate)) throw typeError(`gate to be a result of gating.${router} as it returned it`, 'a copy or a hand-made object');
}

export function checkMatrix(
  m: unknown,
  name: string,
  /** Whether to check every value finite here (false: the caller's native call checks them). */
  checkValues = true,
): { data: ArrayLike<number>; tokens: number; numExperts: number } {
  if (typeof m !== 'object' || m === null) throw typeError(`${name} to be a Tensor or { data, shape } [tokens, numExperts]`, describe(m));
  const { data, shape } = m as Matrix;
  if (typedArrayTag(data) === undefined && !Array.isArray(data)) throw typeError(`${name}.data to be a typed array`, describe(data));
  if (!Array.isArray(shape) || shape.length !== 2)
    throw rangeError(`${name} to have 2 dimensions [tokens, numExperts]`, `shape ${JSON.stringify(shape)}`);
  const [tokens, numExperts] = shape;
  if (!(tokens >= 1) || !(numExperts >= 1)) throw rangeError(`${name} to be at least [1, 1]`, `[${shape.join(', ')}]`);
  if (data.length !== tokens * numExperts) throw rangeError(`${name}.data to have ${tokens * numExperts} elements`, `${data.length}`);
  if (checkValues)
    for (let i = 0; i < data.length; i++)
      if (!Number.isFinite(data[i]))
        throw rangeError(
          `${name} to contain only finite values`,
          `${data[i]} at ${name}[${Math.floor(i / numExperts)}, ${i % numExperts}]`,
        );
  return { data, tokens, numExperts };
}

/** Softmax of row t of a [T, E] matrix, in float64 (max subtracted). */
export function softmaxRow(
  data: ArrayLike<number>,
  t: number,
  numExperts: number,
  out: Float64Array = new Float64Array(numExperts),
): Float64Array {
  let max = -Infinity;
  for (let e = 0; e < numExperts; e++) max = Math.max(max, data[t * numExperts + e]);
  let sum = 0;
  for (let e = 0; e < numExperts; e++) sum += out[e] = Math.exp(data[t * numExperts + e] - max);
  for (let e = 0; e < numExperts; e++) out[e] /= sum;
  return out;
}

/** Softmax of every row. */
export function softmaxRows(data: ArrayLike<number>, tokens: number, numExperts: number): Float64Array {
  const out = new Float64Array(tokens * numExperts);
  for (let t = 0; t < tokens; t++) softmaxRow(data, t, numExperts, out.subarray(t * numExperts, (t + 1) * numExperts));
  return out;
}

/**
 * Indices of the k largest of values[offset + i * stride] (i < count), largest first; equal values go to the
 * lower index ('lower', torch-like) or the higher one ('higher', onnxruntime). `allowed` masks candidates.
 */
export function rankTop(
  values: ArrayLike<number>,
  offset: number,
  count: number,
  k: number,
  tieBreak: TieBreak = 'lower',
  allowed?: (i: number) => boolean,
  stride = 1,
): number[] {
  // k scans of `count` values cost k x count: with k = E = 65,536 (soft routing) minutes a token. Past a few picks,
  // one sort of the candidates gives the same order (value descending, ties by index as tieBreak says); NaN, which
  // no comparison orders, keeps the scans' own answer.
  if (k > 8 && count > 64) {
    const candidates: number[] = [];
    for (let i = 0; i < count; i++) {
      if (allowed && !allowed(i)) continue;
      if (Number.isNaN(values[offset + i * stride])) return rankTopByScans(values, offset, count, k, tieBreak, allowed, stride);
      candidates.push(i);
    }
    const lowerFirst = tieBreak !== 'higher';
    candidates.sort((a, b) => {
      const va = values[offset + a * stride];
      const vb = values[offset + b * stride];
      return va !== vb ? (va > vb ? -1 : 1) : lowerFirst ? a - b : b - a;
    });
    return candidates.slice(0, k);
  }
  return rankTopByScans(values, offset, count, k, tieBreak, allowed, stride);
}

function rankTopByScans(
  values: ArrayLike<number>,
  offset: number,
  count: number,
  k: number,
  tieBreak: TieBreak,
  allowed: ((i: number) => boolean) | undefined,
  stride: number,
): number[] {
  const picked: number[] = [];
  const taken = new Uint8Array(count);
  for (let j = 0; j < k; j++) {
    let best = -1;
    for (let i = 0; i < count; i++) {
      if (taken[i] || (allowed && !allowed(i))) continue;
      const v = values[offset + i * stride];
      if (best < 0) best = i;
      else {
        const b = values[offset + best * stride];
        if (v > b || (v === b && tieBreak === 'higher')) best = i;
      }
    }
    if (best < 0) break;
    taken[best] = 1;
    picked.push(best);
  }
  return picked;
}

export function countPerExpert(experts: Int32Array, numExperts: number): Int32Array {
  const counts = new Int32Array(numExperts);
  for (const e of experts) if (e >= 0) counts[e]++;
  return counts;
}

/**
 * Backward of weights that are a softmax over each token's selected logits (normalised top-k, Shazeer eq. 3,
 * Mixtral): dL/dl_i = w_i (g_i - sum_j w_j g_j) over the selected i; zero elsewhere. `kept` masks dropped
 * slots: their weight is 0 whatever the logits, so their upstream gradient is ignored, but their expert still
 * shares the softmax denominator.
 */
export function selectedSoftmaxBackward(
  gate: { experts: Int32Array; topK: number; tokens: number; numExperts: number },
  selected: Int32Array, // [T * topK] the experts before dropping
  selectedWeights: Float64Array, // [T * topK] softmax over the selected logits
  grad: ArrayLike<number>,
): Float64Array {
  const { topK: k, tokens, numExperts } = gate;
  const out = new Float64Array(tokens * numExperts);
  for (let t = 0; t < tokens; t++) {
    let dot = 0;
    for (let j = 0; j < k; j++) {
      const s = t * k + j;
      if (gate.experts[s] >= 0) dot += selectedWeights[s] * grad[s];
    }
    for (let j = 0; j < k; j++) {
      const s = t * k + j;
      if (selected[s] < 0) continue;
      const g = gate.experts[s] >= 0 ? grad[s] : 0;
      out[t * numExperts + selected[s]] += selectedWeights[s] * (g - dot);
    }
  }
  return out;
}

/**
 * Backward of weights that are full-softmax probabilities p (soft, switch, unnormalised top-k, expert choice):
 * dL/dl_i = p_i (G_i - sum_e p_e G_e) with G_e the upstream gradient summed over the slots holding expert e.
 * Every logit of the token gets gradient through the softmax normaliser.
 */
export function fullSoftmaxBackward(
  gate: { experts: Int32Array; topK: number; tokens: number; numExperts: number },
  probs: Float64Array,
  grad: ArrayLike<number>,
): Float64Array {
  const { topK: k, tokens, numExperts: n } = gate;
  const out = new Float64Array(tokens * n);
  const g = new Float64Array(n);
  for (let t = 0; t < tokens; t++) {
    g.fill(0);
    for (let j = 0; j < k; j++) {
      const e = gate.experts[t * k + j];
      if (e >= 0) g[e] += grad[t * k + j];
    }
    let dot = 0;
    for (let e = 0; e < n; e++) dot += probs[t * n + e] * g[e];
    for (let e = 0; e < n; e++) out[t * n + e] = probs[t * n + e] * (g[e] - dot);
  }
  return out;
}

export function checkGrad(grad: unknown, gate: GateResult, name = 'gradWeights'): ArrayLike<number> {
  const tag = typedArrayTag(grad);
  if (tag === undefined && !Array.isArray(grad)) throw typeError(`${name} to be a typed array [tokens * topK]`, describe(grad));
  const g = grad as ArrayLike<number>;
  if (g.length !== gate.tokens * gate.topK) throw rangeError(`${name}.length = ${gate.tokens * gate.topK} (tokens * topK)`, `${g.length}`);
  for (let i = 0; i < g.length; i++)
    if (typeof g[i] !== 'number' || !Number.isFinite(g[i]))
      throw rangeError(`${name} to contain only finite numbers`, `${describe(g[i])} at ${name}[${i}]`);
  return g;
}
