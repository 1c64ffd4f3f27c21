/** What a forward returns: the output, the routing it used, and the balance losses asked for. */
import { AuxLoss, AuxLossKind, AuxLossSpec } from './aux-losses';
import * as gating from './gating';
import { Tensor } from './tensor';

export interface Routing {
  /** Slots per token (for expert choice, the most experts any token got). */
  topK: number;
  /** [tokens * topK] expert per slot, token-major (token t at t*topK .. t*topK+topK-1), descending weight; -1 = dropped. */
  experts: Int32Array;
  /** [tokens * topK] routing weight per slot (0 for dropped slots). */
  weights: Float32Array;
  /** [numExperts] slots each expert received, after dropping. */
  tokensPerExpert: Int32Array;
  /** [tokens, numExperts] router logits (before exploration noise). */
  logits: Tensor<'float32'>;
  /** Slots dropped by capacity (and GShard's random routing). */
  dropped: number;
  /**
   * The router's full result (float64, as the rule's function in gating/ returns it), for its backward pass there.
   * Made on first read, by the core, from the forward's logits and seeds (the same choices, drops and noise); a
   * spread copy of the routing has none. Absent for a rank without tokens.
   */
  gate?: gating.GateResult;
  /** What the router read: x, or x with Switch jitter applied while training. */
  routerInput: Float32Array;
}

export interface MoEOutput {
  /** [tokens, dModel]: sum over the selected experts of weight * expert(x), plus the shared experts. */
  output: Tensor<'float32'>;
  routing: Routing;
  /** The balance losses asked for with options.auxLosses: value and dL/d(router logits) each. */
  auxLosses?: Partial<Record<AuxLossKind, AuxLoss>>;
}

export interface ForwardOptions {
  /**
   * Training mode: noisy top-k noise, exploration noise, jitter and GShard random routing apply, and the forward
   * keeps what `layer.backward` of this input needs (the experts' pre-activations, tokens x topK x 2 x dHidden
   * floats, kept by the layer until its next training forward or optimizer step).
   */
  training?: boolean;
  /**
   * With `training`: keep nothing, and let the backward recompute the pre-activations (about two thirds of a
   * forward's time, for that memory).
   */
  recompute?: boolean;
  /** Balance losses to compute with the output, e.g. ['switch', 'zLoss'] or [{ kind: 'load', coefficient: 1e-2 }]. */
  auxLosses?: readonly AuxLossSpec[];
  /**
   * A float32 [tokens, dModel] tensor to write the output into, returned as `output`, instead of a new one: no
   * allocation per call in a serving loop. It must share no memory with x; with `forward`, read it only once the
   * Promise has settled.
   */
  out?: Tensor;
}

/** The routing of one forward as the layer used it (before it becomes the public Routing). */
export interface RoutedForward {
  topK: number;
  experts: Int32Array;
  weights: Float32Array;
  tokensPerExpert: Int32Array;
  logits: Float32Array;
  dropped: number;
  /** Makes the gate on first read of routing.gate (routed again in the core; the same gate); none without tokens. */
  lazyGate: (() => gating.GateResult) | undefined;
  routerInput: Float32Array;
}

/**
 * A forward's routing, whose gate is made on first read (a getter of the class: an accessor defined on each object,
 * or in an object literal, cost 4-7 us a forward, a quarter of a tiny layer's). Like every class getter it is not an
 * own property: a spread copy of the routing has no gate.
 */
class LayerRouting implements Routing {
  topK: number;
  experts: Int32Array;
  weights: Float32Array;
  tokensPerExpert: Int32Array;
  logits: Tensor<'float32'>;
  dropped: number;
  routerInput: Float32Array;
  #gate: gating.GateResult | undefined;
  #make: (() => gating.GateResult) | undefined;

  constructor(r: RoutedForward, logits: Tensor<'float32'>, make: (() => gating.GateResult) | undefined) {
    this.topK = r.topK;
    this.experts = r.experts;
    this.weights = r.weights;
    this.tokensPerExpert = r.tokensPerExpert;
    this.logits = logits;
    this.dropped = r.dropped;
    this.routerInput = r.routerInput;
    this.#make = make;
  }

  get gate(): gating.GateResult | undefined {
    if (this.#make) {
      this.#gate = this.#make();
      this.#make = undefined;
    }
    return this.#gate;
  }

  set gate(value: gating.GateResult | undefined) {
    this.#gate = value;
    this.#make = undefined;
  }
}

/**
 * Assembles a forward's result. `out` is options.out as the layer checked it, returned as the output (the native
 * side wrote into it); `auxLosses` the balance losses the core computed with the forward.
 */
export function assembleOutput(
  output: Float32Array,
  tokens: number,
  dims: { dModel: number; numExperts: number },
  r: RoutedForward,
  out: Tensor<'float32'> | undefined,
  auxLosses: Partial<Record<AuxLossKind, AuxLoss>> | undefined,
): MoEOutput {
  const logits = Tensor.trusted(r.logits, [tokens, dims.numExperts], 'float32');
  const routing: Routing = new LayerRouting(r, logits, r.lazyGate);
  const result: MoEOutput = { output: out ?? Tensor.trusted(output, [tokens, dims.dModel], 'float32'), routing };
  if (auxLosses) result.auxLosses = auxLosses;
  return result;
}
