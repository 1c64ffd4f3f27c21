/**
 * What a forward of an MoELayer remembers about the result it returned, privately, so that a later backward can
 * tell a result of this layer, for this x, as the forward returned it, from anything else (issue 34: a refilled x
 * buffer, a result of another layer of the same config, or a routing whose slots were reordered all gave silent
 * gradients of neither). Kept in a WeakMap keyed by the result: it lives exactly as long as the result does.
 */
import type { MoEOutput } from './layer-output';
import type { NativeDraws } from './native';

export interface ForwardRecord {
  /** The layer whose forward made the result. */
  layer: object;
  /** The layer's optimizer steps before that forward: its weights then (PyTorch's version counter, in effect). */
  steps: number;
  /** x as it was when forward was called (a copy: the caller may refill its buffer). */
  x: Float32Array;
  topK: number;
  /** The routing the forward returned, copied. */
  experts: Int32Array;
  weights: Float32Array;
  /**
   * The router's logits as that forward returned them, its draws (seeds) and the selection bias it ran with: with
   * them the core routes that forward again, the same choices, drops and noise, for its backward.
   */
  logits: Float32Array;
  draws: NativeDraws;
  selectionBias: Float64Array | undefined;
}

const records = new WeakMap<object, ForwardRecord>();

export function rememberForward(result: MoEOutput, record: ForwardRecord): void {
  records.set(result, record);
}

export function forwardRecordOf(result: object): ForwardRecord | undefined {
  return records.get(result);
}

/** Whether two typed arrays hold the same bytes. */
export function sameBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  if (a.byteLength !== b.byteLength) return false;
  const bytes = (v: ArrayBufferView) => Buffer.from(v.buffer as ArrayBuffer, v.byteOffset, v.byteLength);
  return bytes(a).equals(bytes(b));
}

/**
 * The gradients each backward returned, by the layer whose backward made them: what `into` may be. Keyed by their
 * `gate` object, so that a copy with some arrays replaced (`{ ...grads, w1 }`) still counts as them.
 */
const gradients = new WeakMap<object, object>();

export function rememberGradients(grads: object, layer: object): void {
  gradients.set(grads, layer);
}

export function gradientsLayerOf(grads: object): object | undefined {
  return gradients.get(grads);
}
