/**
 * The building blocks of an MoE layer, usable on their own by someone who brings their own routing:
 *   routerLogits -> topK -> dispatch -> expertFFN -> combine
 * MoELayer runs the same core functions in one native call with a reusable workspace.
 */
import { ACTIVATIONS, Activation } from './activation';
import { describe, rangeError, typeError } from './errors';
import { AnyExpertWeights, ExpertShape, WeightDtype, expertSpec, impliedQuantization, resolveWeightFormat } from './expert-weights';
import { GroupSize, isQuantized } from './quant';
import { NativeExperts, native } from './native';
import { Tensor } from './tensor';
import { isFloat32Array, isInt32Array } from './typed-arrays';
import { MAX_EXPERTS, expectBoolean, expectInteger, expectOneOf, expectOptions, expectTensor, float32Data } from './validate';

export interface TopKResult {
  topK: number;
  /** [tokens * topK] expert per slot, token-major, slots in descending weight order. */
  experts: Int32Array;
  /** [tokens * topK] routing weight per slot. */
  weights: Float32Array;
}

export interface DispatchPlan {
  /** [numExperts] slots routed to each expert (dropped slots, expert -1, are not counted). */
  tokensPerExpert: Int32Array;
  /** [numExperts + 1] exclusive prefix sum of tokensPerExpert: expert e's slots are order[offsets[e] .. offsets[e+1]). */
  expertOffsets: Int32Array;
  /** [slots] slot indices (t * topK + j) grouped by expert, token order kept within each; -1 past the routed ones. */
  order: Int32Array;
}

/** Router logits [T, E] = x [T, dModel] times router^T, router [E, dModel] (nn.Linear layout). */
export function routerLogits(x: Tensor, router: Tensor): Tensor<'float32'> {
  const xs = expectTensor(x, 'x', ['float32'], [null, null], ['tokens', 'dModel']);
  const [tokens, dModel] = xs.shape;
  const r = expectTensor(router, 'router', ['float32', 'float16', 'bfloat16'], [null, dModel], ['numExperts', 'dModel']);
  const experts = r.shape[0];
  if (tokens < 1) throw rangeError('x.shape[0] >= 1 (tokens)', `${tokens}`);
  if (experts < 1) throw rangeError('router.shape[0] >= 1 (numExperts)', `${experts}`);
  const logits = native().routerLogits({ x: xs.data, tokens, dModel, router: float32Data(r), numExperts: experts });
  return Tensor.from(logits, [tokens, experts]);
}

/**
 * Softmax top-k routing, the Mixtral / Hugging Face rule: softmax over all E logits, the k largest (ties to the
 * lower expert index), renormalised to sum to 1 (`normalize: true`, the default) or kept as the raw softmax
 * probabilities (`normalize: false`, Switch style, Fedus et al. 2021 eq. 2). k = E is soft routing.
 */
export function topK(logits: Tensor, k: number, options: { normalize?: boolean } = {}): TopKResult {
  options = expectOptions(options, 'options') as { normalize?: boolean };
  const l = expectTensor(logits, 'logits', ['float32'], [null, null], ['tokens', 'numExperts']);
  const [tokens, numExperts] = l.shape;
  if (tokens < 1) throw rangeError('logits.shape[0] >= 1 (tokens)', `${tokens}`);
  if (numExperts < 1) throw rangeError('logits.shape[1] >= 1 (numExperts)', `${numExperts}`);
  expectInteger(k, 'k', 1, numExperts);
  const normalize = expectBoolean(options.normalize ?? true, 'options.normalize');
  const r = native().topK({ logits: l.data, tokens, numExperts, k, normalize });
  return { topK: k, experts: r.experts, weights: r.weights };
}

/**
 * Dropless dispatch (MegaBlocks): histogram of slots per expert, prefix sum, stable permutation.
 * `experts` is [slots], token-major; -1 marks a dropped slot.
 */
export function dispatch(experts: Int32Array, numExperts: number): DispatchPlan {
  if (!isInt32Array(experts)) throw typeError('experts to be an Int32Array', describe(experts));
  expectInteger(numExperts, 'numExperts', 1, MAX_EXPERTS);
  return native().dispatch({ experts, numExperts });
}

/** Expert weights packed once into the kernels' panel layout; free them with dispose(). */
export class PackedExperts implements Disposable {
  readonly numExperts: number;
  readonly dModel: number;
  readonly dHidden: number;
  readonly activation: Activation;
  /** How the packed weights are stored (see MoEConfig.weightDtype). */
  readonly weightDtype: WeightDtype;
  /** int8 / int4: inputs per scale, or 'row' (see MoEConfig.groupSize). */
  readonly groupSize: GroupSize;
  private handle: NativeExperts | undefined;

  /**
   * options.weightDtype and options.groupSize as MoEConfig's (quantized weights imply them); activation default
   * 'swiglu'.
   */
  constructor(weights: AnyExpertWeights, options: { activation?: Activation; weightDtype?: WeightDtype; groupSize?: GroupSize } = {}) {
    options = expectOptions(options, 'options');
    const activation = expectOneOf(options.activation ?? 'swiglu', 'options.activation', ACTIVATIONS);
    const implied = impliedQuantization(weights, options.weightDtype, options.groupSize) ?? {};
    const w1Value = (weights as AnyExpertWeights | undefined)?.w1;
    const [numExperts, dHidden, dModel] = isQuantized(w1Value)
      ? shape3(w1Value.shape)
      : expectTensor(w1Value, 'weights.w1', ['float32', 'float16', 'bfloat16'], [null, null, null], ['numExperts', 'dHidden', 'dModel'])
          .shape;
    const { weightDtype, groupSize } = resolveWeightFormat(
      implied.weightDtype ?? options.weightDtype,
      implied.groupSize ?? options.groupSize,
      'options',
      [
        ['dModel', dModel],
        ['dHidden', dHidden],
      ],
    );
    const shape: ExpertShape = { numExperts, dModel, dHidden, activation };
    const spec = expertSpec(weights, shape, 'weights', weightDtype, groupSize);
    this.numExperts = numExperts;
    this.dModel = dModel;
    this.dHidden = dHidden;
    this.activation = activation;
    this.weightDtype = weightDtype;
    this.groupSize = groupSize;
    this.handle = new (native().NativeExperts)(spec);
  }

  get disposed(): boolean {
    return this.handle === undefined;
  }

  /** Bytes of packed weights held. */
  get packedBytes(): number {
    return this.native().packedBytes();
  }

  dispose(): void {
    this.handle?.dispose();
    this.handle = undefined;
  }

  /** `using x = ...` (TypeScript 5.2+, Node 20.4+ / 18.18+) disposes it at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** @internal */
  native(): NativeExperts {
    if (!this.handle) throw typeError('experts that are not disposed', 'disposed PackedExperts');
    return this.handle;
  }
}

function shape3(shape: readonly number[]): [number, number, number] {
  if (shape.length !== 3)
    throw rangeError('weights.w1 to have 3 dimensions ([numExperts, dHidden, dModel])', `shape [${shape.join(', ')}]`);
  return [shape[0], shape[1], shape[2]];
}

function ffnArguments(x: Tensor, experts: PackedExperts, plan: DispatchPlan, k: number) {
  if (!(experts instanceof PackedExperts)) throw typeError('experts to be PackedExperts', describe(experts));
  const handle = experts.native();
  const xs = expectTensor(x, 'x', ['float32'], [null, experts.dModel], ['tokens', 'dModel']);
  const tokens = xs.shape[0];
  if (tokens < 1) throw rangeError('x.shape[0] >= 1 (tokens)', `${tokens}`);
  expectInteger(k, 'topK', 1, experts.numExperts);
  if (typeof plan !== 'object' || plan === null) throw typeError('plan to be a DispatchPlan', describe(plan));
  if (!isInt32Array(plan.expertOffsets)) throw typeError('plan.expertOffsets to be an Int32Array', describe(plan.expertOffsets));
  if (!isInt32Array(plan.order)) throw typeError('plan.order to be an Int32Array', describe(plan.order));
  return { handle, xs, tokens };
}

/**
 * The grouped expert FFN over a dispatch plan: row t * topK + j of the result is expert e's output for token t,
 * where slot t * topK + j was routed to e; dropped slots give zero rows. Result: [tokens * topK, dModel].
 */
export function expertFFN(x: Tensor, experts: PackedExperts, plan: DispatchPlan, topK: number): Tensor<'float32'> {
  const { handle, xs, tokens } = ffnArguments(x, experts, plan, topK);
  const out = native().expertFFN({ experts: handle, x: xs.data, tokens, k: topK, expertOffsets: plan.expertOffsets, order: plan.order });
  return Tensor.from(out, [tokens * topK, experts.dModel]);
}

/** expertFFN off the event loop. */
export async function expertFFNAsync(x: Tensor, experts: PackedExperts, plan: DispatchPlan, topK: number): Promise<Tensor<'float32'>> {
  const { handle, xs, tokens } = ffnArguments(x, experts, plan, topK);
  const out = await native().expertFFNAsync({
    experts: handle,
    x: xs.data,
    tokens,
    k: topK,
    expertOffsets: plan.expertOffsets,
    order: plan.order,
  });
  return Tensor.from(out, [tokens * topK, experts.dModel]);
}

/**
 * out[t] = sum over j of weights[t * topK + j] * slotOutputs[t * topK + j], summed in slot order (no atomics),
 * so the result is bitwise identical for any thread count. slotOutputs: [tokens * topK, dModel].
 */
export function combine(slotOutputs: Tensor, weights: Float32Array, topK: number): Tensor<'float32'> {
  const s = expectTensor(slotOutputs, 'slotOutputs', ['float32'], [null, null], ['slots', 'dModel']);
  const [slots, dModel] = s.shape;
  expectInteger(topK, 'topK');
  if (slots < topK || slots % topK !== 0) throw rangeError(`slotOutputs.shape[0] to be a positive multiple of topK = ${topK}`, `${slots}`);
  if (!isFloat32Array(weights)) throw typeError('weights to be a Float32Array', describe(weights));
  if (weights.length !== slots) throw rangeError(`weights.length = ${slots} (slots)`, `${weights.length}`);
  const out = native().combine({ slotOutputs: s.data, weights, tokens: slots / topK, k: topK, dModel });
  return Tensor.from(out, [slots / topK, dModel]);
}
