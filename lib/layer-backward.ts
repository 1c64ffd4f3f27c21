/**
 * MoELayer.backward: the gradients of a forward's output with respect to the layer's input and every weight, in one
 * call of the core: the experts' part (their weights, the input through them, dL/d each routing weight;
 * core/backward.cpp), then the router's (core/layer_router.cpp): the routing weights' gradients through the rule's
 * backward plus every aux loss of the forward, to the router's weights and through them to the input.
 */
import { describe, rangeError, typeError } from './errors';
import { ExpertWeights } from './expert-weights';
import { GateGradients } from './gate-gradients';
import { ResolvedConfig } from './layer-config';
import { MoEOutput } from './layer-output';
import {
  NativeBackwardResult as NativeBackward,
  NativeExportedExperts,
  NativeGradientDestinations,
  NativeLayer,
  NativeBackwardCall,
} from './native';
import { Tensor } from './tensor';
import { ForwardRecord, sameBytes } from './forward-record';
import { typedArrayTag } from './typed-arrays';
import { expectTensor } from './validate';

/** Every gradient of a backward: float32 Tensors shaped like the weights (MoEWeights), and the input's. */
export interface LayerGradients extends ExpertWeights<Tensor<'float32'>> {
  /** dL/dx [tokens, dModel]: through the experts and through the router. */
  dx: Tensor<'float32'>;
  /** dL/dW_g [numExperts, dModel]: the routing weights' path and every aux loss of the forward. */
  router: Tensor<'float32'>;
  noiseRouter?: Tensor<'float32'>;
  /** [numExperts], when the layer has a router bias. */
  routerBias?: Tensor<'float32'>;
  shared?: ExpertWeights<Tensor<'float32'>>;
  sharedGate?: Tensor<'float32'>;
  /** dL/d(routing weight) of each slot [tokens * topK] (0 for dropped slots), and the router's logits' gradient. */
  gate: GateGradients;
}

/**
 * Options of MoELayer.backward. By default a backward writes the layer's own gradients: the arrays of the layer's
 * previous backward are overwritten (as PyTorch keeps one `.grad` per parameter), so a training loop touches no
 * fresh memory after its first step (a fresh 277 MB of gradients per call made a backward of the small shape 7x its
 * forward here, against 2.1x when reused: page faults in a VM). Gradients kept across backwards must be copied, or
 * asked for with `fresh`.
 */
export interface BackwardOptions {
  /**
   * The gradients of an earlier backward of this layer (or a copy of them), whose arrays this one overwrites instead
   * of the layer's own (the returned gradients share them).
   */
  into?: LayerGradients;
  /** New arrays for this backward's gradients; the layer's own (those of its earlier backwards) are left as they are. */
  fresh?: boolean;
}

/** What the backward needs of the layer. */
export interface BackwardContext {
  config: Readonly<ResolvedConfig>;
  /** The binding's backwardSync and backward (lib/native.ts), bound to the layer. */
  experts: NativeLayer['backwardSync'];
  expertsAsync: NativeLayer['backward'];
  /** Runs a collective call's checks (an expert-parallel layer: a failure tells the other ranks). */
  collectiveChecks: <T>(checks: () => T) => T;
  /** What this layer's forward remembers of `result`, or undefined when no forward of this layer returned it. */
  forwardRecord: (result: object) => ForwardRecord | undefined;
  /** The layer's optimizer steps so far (a result of a forward before the last one is refused). */
  steps: number;
  /** Whether `grads` was returned by a backward of this layer (what options.into may be). */
  isOwnGradients: (grads: object) => boolean;
  /** The layer's own gradients: those of its last backward that was not `fresh` (undefined before the first). */
  ownGradients: () => LayerGradients | undefined;
  /** Makes `grads` the layer's own. */
  keepGradients: (grads: LayerGradients) => void;
}

/** The checked arguments of a backward (x and gradOutput copied for an async one: it reads them after returning). */
interface PreparedBackward {
  xs: Tensor<'float32'>;
  g: Tensor<'float32'>;
  tokens: number;
  result: MoEOutput;
  record: ForwardRecord;
  into: NativeGradientDestinations | undefined;
  /** Whether the gradients become the layer's own (no `into`, not `fresh`). */
  own: boolean;
}

function prepareBackward(
  ctx: BackwardContext,
  x: Tensor,
  result: MoEOutput,
  gradOutput: Tensor,
  options: BackwardOptions,
  copy: boolean,
): PreparedBackward {
  const c = ctx.config;
  let xs = expectTensor(x, 'x', ['float32'], [null, c.dModel], ['tokens', 'dModel']);
  const tokens = xs.shape[0];
  let g = expectTensor(gradOutput, 'gradOutput', ['float32'], [tokens, c.dModel], ['tokens', 'dModel']);
  if (typeof result !== 'object' || result === null || typeof result.routing !== 'object' || result.routing === null)
    throw typeError("result to be the result of this layer's forward", describe(result));
  const { routing } = result;
  expectTensor(routing.logits, 'result.routing.logits', ['float32'], [tokens, c.numExperts], ['tokens', 'numExperts']);
  const record = ctx.forwardRecord(result);
  checkAgainstForward(record, xs, routing, ctx.steps);
  const input = routing.routerInput;
  if (input && typedArrayTag(input) === 'Float32Array' && !sameBytes(input, xs.data))
    throw rangeError('a forward of this x without jitter (backward holds no jitter factors yet)', 'a router input that differs from x');
  if (typeof options !== 'object' || options === null) throw typeError('options to be an object', describe(options));
  if (options.into !== undefined && (typeof options.into !== 'object' || options.into === null || !ctx.isOwnGradients(options.into)))
    throw typeError('options.into to be the gradients of an earlier backward of this layer (or a copy of them)', describe(options.into));
  if (options.fresh !== undefined && typeof options.fresh !== 'boolean')
    throw typeError('options.fresh to be a boolean', describe(options.fresh));
  if (options.fresh && options.into !== undefined)
    throw rangeError('options.into or options.fresh, not both', 'both (fresh arrays, or those of into?)');
  const own = options.into === undefined && !options.fresh;
  // The layer's own arrays, but for dx where this backward has another token count (it gets a new one); new ones
  // where the caller detached or shrank one of them (the layer's own are never a reason to refuse a backward).
  const kept = own ? ctx.ownGradients() : undefined;
  const owned = kept && intact(kept) ? kept : undefined;
  const target = options.into ?? (owned && owned.dx.shape[0] !== tokens ? { ...owned, dx: undefined } : owned);
  const into = target === undefined ? undefined : destinations(target, c, tokens);
  if (copy) {
    xs = Tensor.from(Float32Array.from(xs.data), xs.shape);
    g = Tensor.from(Float32Array.from(g.data), g.shape);
  }
  return { xs, g, tokens, result, record: record!, into, own };
}

/**
 * A backward differentiates the forward that made `result`: refused unless this layer's forward returned it with the
 * weights it has now (no step since), x holds the values that forward read (a buffer refilled since gives gradients
 * of neither batch), and its routing is as returned (reordered slots would pair gradients with the wrong experts).
 */
function checkAgainstForward(
  record: ForwardRecord | undefined,
  xs: Tensor<'float32'>,
  routing: MoEOutput['routing'],
  steps: number,
): asserts record is ForwardRecord {
  if (!record) throw rangeError("result to be the result of this layer's forward", 'a result no forward of this layer returned');
  // (the gradient of that forward's output needs the weights it ran with; as PyTorch refuses a backward through a
  // tensor modified in place since, a step in between is refused rather than mixing old routing and new weights)
  if (record.steps !== steps)
    throw rangeError(
      `a result of a forward since the layer's last step (step ${steps})`,
      `a result of a forward before step ${record.steps + 1} (its weights have changed since)`,
    );
  if (!sameBytes(record.x, xs.data))
    throw rangeError('x to hold the values its forward read', 'an x whose values changed since that forward (a refilled buffer?)');
  const same = (a: unknown, b: Int32Array | Float32Array, tag: string) => typedArrayTag(a) === tag && sameBytes(a as ArrayBufferView, b);
  if (
    routing.topK !== record.topK ||
    !same(routing.experts, record.experts, 'Int32Array') ||
    !same(routing.weights, record.weights, 'Float32Array')
  )
    throw rangeError('result.routing as its forward returned it', 'a routing whose topK, experts or weights were changed');
}

export function layerBackward(
  ctx: BackwardContext,
  x: Tensor,
  result: MoEOutput,
  gradOutput: Tensor,
  options: BackwardOptions = {},
): LayerGradients {
  const p = ctx.collectiveChecks(() => prepareBackward(ctx, x, result, gradOutput, options, false));
  return keep(ctx, p, finishBackward(ctx, p, ctx.experts(backwardCall(p))));
}

function keep(ctx: BackwardContext, p: PreparedBackward, grads: LayerGradients): LayerGradients {
  if (p.own) ctx.keepGradients(grads);
  return grads;
}

/** layerBackward with the experts' part on the job thread (the router's part runs when it settles). */
export async function layerBackwardAsync(
  ctx: BackwardContext,
  x: Tensor,
  result: MoEOutput,
  gradOutput: Tensor,
  options: BackwardOptions = {},
): Promise<LayerGradients> {
  const p = ctx.collectiveChecks(() => prepareBackward(ctx, x, result, gradOutput, options, true));
  const native = await ctx.expertsAsync(backwardCall(p));
  return keep(ctx, p, finishBackward(ctx, p, native));
}

/**
 * The backward call of a prepared backward: its forward's routing held fixed (the core routes it again from its
 * logits and draws: the same choices, drops and noise), and each aux loss's gradient, in the order the forward made
 * them.
 */
function backwardCall(p: PreparedBackward): NativeBackwardCall {
  const { routing } = p.result;
  const { topK: k, experts, weights } = routing;
  const aux = Object.values(p.result.auxLosses ?? {}).map((a) => {
    const entry: { gradLogits: Float64Array; gradNoiseLogits?: Float64Array } = { gradLogits: float64(a.gradLogits) };
    if (a.gradNoiseLogits) entry.gradNoiseLogits = float64(a.gradNoiseLogits);
    return entry;
  });
  const { logits, draws, selectionBias } = p.record;
  const call: NativeBackwardCall = {
    x: p.xs.data,
    tokens: p.tokens,
    k,
    experts,
    weights,
    gradOutput: p.g.data,
    into: p.into,
    aux,
    logits,
    draws,
  };
  if (selectionBias) call.selectionBias = selectionBias;
  return call;
}

function float64(v: ArrayLike<number>): Float64Array {
  return typedArrayTag(v) === 'Float64Array' ? (v as Float64Array) : Float64Array.from(v);
}

function finishBackward(ctx: BackwardContext, p: PreparedBackward, native: NativeBackward): LayerGradients {
  const c = ctx.config;
  const { tokens } = p;
  const r = native.router;
  // (dx holds both paths already: through the experts and, in the core, dL/dlogits W_g and W_noise)
  const gate: GateGradients = { gradWeights: r.gradWeights, gradLogits: r.gradLogits, gradRouter: r.gradRouter };
  if (r.gradNoiseLogits && r.gradNoiseRouter) {
    gate.gradNoiseLogits = r.gradNoiseLogits;
    gate.gradNoiseRouter = r.gradNoiseRouter;
  }
  const out: LayerGradients = {
    dx: Tensor.from(native.dx, [tokens, c.dModel]),
    router: Tensor.from(Float32Array.from(gate.gradRouter), [c.numExperts, c.dModel]),
    ...experts(native.experts, c.numExperts, c.dHidden, c.dModel),
    gate,
  };
  if (gate.gradNoiseRouter) out.noiseRouter = Tensor.from(Float32Array.from(gate.gradNoiseRouter), [c.numExperts, c.dModel]);
  if (r.gradRouterBias) out.routerBias = Tensor.from(r.gradRouterBias, [c.numExperts]);
  if (native.shared) out.shared = experts(native.shared, c.sharedExperts, c.sharedHidden, c.dModel);
  if (native.sharedGate) out.sharedGate = Tensor.from(native.sharedGate, [c.sharedExperts, c.dModel]);
  return out;
}

/** Whether every array of gradients still holds its tensor's elements (none detached, none shrunk). */
function intact(grads: LayerGradients): boolean {
  const whole = (t: Tensor | undefined) => t === undefined || t.data.length === t.shape.reduce((a, b) => a * b, 1);
  const set = (e: ExpertWeights<Tensor<'float32'>> | undefined) => e === undefined || [e.w1, e.w3, e.w2, e.b1, e.b3, e.b2].every(whole);
  return whole(grads.dx) && set(grads) && set(grads.shared) && whole(grads.sharedGate);
}

/**
 * The arrays of `into` (LayerGradients of this layer's shapes) where a backward of `tokens` tokens writes; dx may be
 * absent (the layer's own gradients of another token count: a new one).
 */
function destinations(
  into: Omit<LayerGradients, 'dx'> & { dx?: Tensor<'float32'> },
  c: Readonly<ResolvedConfig>,
  tokens: number,
): NativeGradientDestinations {
  if (typeof into !== 'object' || into === null) throw typeError('options.into to be the gradients of a backward', describe(into));
  const take = (value: unknown, name: string, dims: number[], names: string[]) =>
    value === undefined ? undefined : expectTensor(value, name, ['float32'], dims, names).data;
  const expertSet = (v: ExpertWeights<Tensor<'float32'>> | undefined, name: string, e: number, h: number) => {
    if (v === undefined) return undefined;
    if (typeof v !== 'object' || v === null) throw typeError(`${name} to be an object`, describe(v));
    const d = c.dModel;
    return {
      w1: take(v.w1, `${name}.w1`, [e, h, d], ['numExperts', 'dHidden', 'dModel']),
      w3: take(v.w3, `${name}.w3`, [e, h, d], ['numExperts', 'dHidden', 'dModel']),
      w2: take(v.w2, `${name}.w2`, [e, d, h], ['numExperts', 'dModel', 'dHidden']),
      b1: take(v.b1, `${name}.b1`, [e, h], ['numExperts', 'dHidden']),
      b3: take(v.b3, `${name}.b3`, [e, h], ['numExperts', 'dHidden']),
      b2: take(v.b2, `${name}.b2`, [e, d], ['numExperts', 'dModel']),
    };
  };
  return {
    dx: take(into.dx, 'options.into.dx', [tokens, c.dModel], ['tokens', 'dModel']),
    experts: expertSet(into, 'options.into', c.numExperts, c.dHidden),
    shared: c.sharedExperts > 0 ? expertSet(into.shared, 'options.into.shared', c.sharedExperts, c.sharedHidden) : undefined,
    sharedGate: take(into.sharedGate, 'options.into.sharedGate', [c.sharedExperts, c.dModel], ['sharedExperts', 'dModel']),
  };
}

/** Native expert arrays as Tensors shaped like ExpertWeights (absent where null). */
export function experts(x: NativeExportedExperts, e: number, h: number, d: number): ExpertWeights<Tensor<'float32'>> {
  const out: ExpertWeights<Tensor<'float32'>> = { w1: Tensor.from(x.w1, [e, h, d]), w2: Tensor.from(x.w2, [e, d, h]) };
  if (x.w3) out.w3 = Tensor.from(x.w3, [e, h, d]);
  if (x.b1) out.b1 = Tensor.from(x.b1, [e, h]);
  if (x.b3) out.b3 = Tensor.from(x.b3, [e, h]);
  if (x.b2) out.b2 = Tensor.from(x.b2, [e, d]);
  return out;
}
