/**
 * Optimizers for MoELayer.step, with PyTorch's formulas (torch.optim.SGD and torch.optim.AdamW); the state lives
 * in the core beside the packed weights (core/packing.cpp, PackedMatrix::update). And clipGradNorm, as
 * torch.nn.utils.clip_grad_norm_.
 */
import { describe, rangeError, typeError } from './errors';
import type { LayerGradients } from './layer-backward';
import { Tensor } from './tensor';
import type { ResolvedConfig } from './layer-config';
import { asTensor, expectOneOf, expectOptions, expectTensor } from './validate';

export type OptimizerConfig =
  | { kind: 'sgd'; lr: number; momentum?: number; weightDecay?: number }
  | { kind: 'adamw'; lr: number; beta1?: number; beta2?: number; eps?: number; weightDecay?: number };

/** Every field of a step, defaults filled in (SGD: momentum 0, no decay; AdamW: 0.9, 0.999, 1e-8, decay 0.01). */
export interface ResolvedOptimizer {
  kind: 'sgd' | 'adamw';
  lr: number;
  momentum: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
}

export function resolveOptimizer(optimizer: OptimizerConfig): ResolvedOptimizer {
  const o = expectOptions(optimizer, 'optimizer') as Partial<Record<string, unknown>>;
  const kind = expectOneOf(o.kind, 'optimizer.kind', ['sgd', 'adamw'] as const);
  const num = (key: string, fallback: number | undefined, ok: (v: number) => boolean, range: string) => {
    const v = o[key] ?? fallback;
    if (typeof v !== 'number') throw typeError(`optimizer.${key} to be a number`, describe(v));
    if (!Number.isFinite(v) || !ok(v)) throw rangeError(`optimizer.${key} ${range}`, describe(v));
    return v;
  };
  const lr = num('lr', undefined, (v) => v >= 0, '>= 0');
  const weightDecay = num('weightDecay', kind === 'adamw' ? 0.01 : 0, (v) => v >= 0, '>= 0');
  if (kind === 'sgd') {
    for (const key of ['beta1', 'beta2', 'eps'])
      if (o[key] !== undefined) throw rangeError(`no optimizer.${key} with 'sgd'`, describe(o[key]));
    return { kind, lr, weightDecay, momentum: num('momentum', 0, (v) => v >= 0 && v < 1, 'in [0, 1)'), beta1: 0, beta2: 0, eps: 0 };
  }
  if (o.momentum !== undefined) throw rangeError("no optimizer.momentum with 'adamw' (beta1)", describe(o.momentum));
  return {
    kind,
    lr,
    weightDecay,
    momentum: 0,
    beta1: num('beta1', 0.9, (v) => v >= 0 && v < 1, 'in [0, 1)'),
    beta2: num('beta2', 0.999, (v) => v >= 0 && v < 1, 'in [0, 1)'),
    eps: num('eps', 1e-8, (v) => v > 0, '> 0'),
  };
}

/** The parameter gradients of a backward (not dx, not the gate's), checked as float32 Tensors: what clipping sees. */
export function parameterTensors(g: LayerGradients): { name: string; tensor: Tensor<'float32'> }[] {
  const fields = ['router', 'noiseRouter', 'routerBias', 'w1', 'w3', 'w2', 'b1', 'b3', 'b2', 'sharedGate'] as const;
  const all: { name: string; value: unknown }[] = fields.map((name) => ({ name, value: g[name] }));
  if (g.shared !== undefined) {
    if (typeof g.shared !== 'object' || g.shared === null) throw typeError('grads.shared to be an object', describe(g.shared));
    for (const name of ['w1', 'w3', 'w2', 'b1', 'b3', 'b2'] as const) all.push({ name: `shared.${name}`, value: g.shared[name] });
  }
  return all
    .filter(({ value }) => value !== undefined)
    .map(({ name, value }) => ({ name, tensor: asTensor(value, `grads.${name}`) as Tensor<'float32'> }))
    .map(({ name, tensor }) => {
      if (tensor.dtype !== 'float32') throw typeError(`grads.${name}.dtype to be 'float32'`, `'${tensor.dtype}'`);
      return { name, tensor };
    });
}

/**
 * Scales every parameter gradient of `grads` in place so that their global L2 norm is at most maxNorm
 * (torch.nn.utils.clip_grad_norm_: factor maxNorm / (norm + 1e-6) when above); returns the norm before clipping.
 */
export function clipGradNorm(grads: LayerGradients, maxNorm: number): number {
  if (typeof grads !== 'object' || grads === null || !grads.router)
    throw typeError('grads to be the result of layer.backward', describe(grads));
  if (typeof maxNorm !== 'number' || !(maxNorm > 0) || !Number.isFinite(maxNorm))
    throw rangeError('maxNorm to be a finite number > 0', describe(maxNorm));
  const tensors = parameterTensors(grads);
  let sum = 0;
  for (const { name, tensor } of tensors)
    for (let i = 0; i < tensor.data.length; i++) {
      const v = tensor.data[i];
      // A NaN made the norm NaN and left everything unclipped; an infinity made the factor 0 and zeroed every
      // gradient. Neither is a norm to clip by (torch's error_if_nonfinite): refused, the gradients untouched.
      if (!Number.isFinite(v)) throw rangeError(`finite gradients to clip (grads.${name}[${i}])`, `${v}`);
      sum += v * v;
    }
  const norm = Math.sqrt(sum);
  const factor = maxNorm / (norm + 1e-6);
  if (factor < 1) for (const { tensor } of tensors) for (let i = 0; i < tensor.data.length; i++) tensor.data[i] *= factor;
  return norm;
}

type ExpertFields = Partial<Record<'w1' | 'w3' | 'w2' | 'b1' | 'b3' | 'b2', Tensor>>;

/**
 * A backward's parameter gradients checked against the layer's shapes, as the arrays the core's step reads, and the
 * router bias's (which TypeScript keeps).
 */
export function nativeParameterGradients(c: ResolvedConfig, grads: LayerGradients) {
  if (typeof grads !== 'object' || grads === null || !grads.router)
    throw typeError('grads to be the result of layer.backward', describe(grads));
  const arr = (t: Tensor | undefined, dims: number[], name: string) =>
    t === undefined ? null : (expectTensor(t, `grads.${name}`, ['float32'], dims) as Tensor<'float32'>).data;
  const experts = (x: ExpertFields | undefined, e: number, h: number, prefix: string) =>
    x === undefined
      ? null
      : {
          w1: arr(x.w1, [e, h, c.dModel], `${prefix}w1`),
          w3: arr(x.w3, [e, h, c.dModel], `${prefix}w3`),
          w2: arr(x.w2, [e, c.dModel, h], `${prefix}w2`),
          b1: arr(x.b1, [e, h], `${prefix}b1`),
          b3: arr(x.b3, [e, h], `${prefix}b3`),
          b2: arr(x.b2, [e, c.dModel], `${prefix}b2`),
        };
  return {
    native: {
      router: arr(grads.router, [c.numExperts, c.dModel], 'router'),
      noiseRouter: arr(grads.noiseRouter, [c.numExperts, c.dModel], 'noiseRouter'),
      sharedGate: arr(grads.sharedGate, [c.sharedExperts, c.dModel], 'sharedGate'),
      experts: experts(grads, c.numExperts, c.dHidden, '')!,
      shared: c.sharedExperts > 0 ? experts(grads.shared, c.sharedExperts, c.sharedHidden, 'shared.') : null,
    },
    routerBias: arr(grads.routerBias, [c.numExperts], 'routerBias'),
  };
}

/** One step of a float32 parameter kept in TypeScript (the router bias), with the core's formula. */
export function stepInPlace(
  w: Float32Array,
  g: ArrayLike<number>,
  s1: Float32Array,
  s2: Float32Array,
  o: ResolvedOptimizer,
  step: number,
): void {
  const f = Math.fround;
  const c1 = f(1 - f(o.beta1 ** step));
  const c2 = f(1 - f(o.beta2 ** step));
  for (let i = 0; i < w.length; i++) {
    if (o.kind === 'sgd') {
      const gi = f(g[i] + f(o.weightDecay * w[i]));
      s1[i] = f(f(o.momentum * s1[i]) + gi);
      w[i] = f(w[i] - f(o.lr * s1[i]));
    } else {
      w[i] = f(w[i] * f(1 - f(o.lr * o.weightDecay)));
      s1[i] = f(f(o.beta1 * s1[i]) + f(f(1 - o.beta1) * g[i]));
      s2[i] = f(f(o.beta2 * s2[i]) + f(f(f(1 - o.beta2) * g[i]) * g[i]));
      w[i] = f(w[i] - f(f(f(o.lr / c1) * s1[i]) / f(f(Math.sqrt(s2[i]) / Math.sqrt(c2)) + o.eps)));
    }
  }
}
