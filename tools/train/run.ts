/**
 * One training run of the experiment: a single MoE layer (the model) regresses the cluster task's targets by mean
 * squared error, trained by the library's forward, backward and AdamW alone. Records per step the training loss,
 * load CV, experts used and drop rate, and at intervals the loss and routing on a clean evaluation set with the
 * cluster x expert table of routed fractions.
 */
import { MoELayer, Tensor, clipGradNorm, losses } from '../../lib';
import { Batch, ClusterTask } from './clusters';
import { TrainConfig } from './configs';

export interface TrainOptions {
  dModel: number;
  dHidden: number;
  numExperts: number;
  steps: number;
  batch: number;
  lr: number;
  evalEvery: number;
  seed: number;
}

export interface StepRecord {
  step: number;
  loss: number;
  loadCV: number;
  expertsUsed: number;
  dropRate: number;
}

export interface EvalRecord {
  step: number;
  loss: number;
  loadCV: number;
  expertsUsed: number;
  dropRate: number;
  /**
   * Mean over clusters of the largest share of a cluster's tokens whose first choice is one same expert (1: each
   * cluster has an expert of its own; about 1/E: none).
   */
  specialisation: number;
}

export interface RunResult {
  name: string;
  source: string;
  topK: number;
  steps: StepRecord[];
  evals: EvalRecord[];
  /** [clusters][experts]: each cluster's share of routing weight per expert, on the evaluation set at the end. */
  table: number[][];
  ms: number;
}

/** The mean squared error over every element and its gradient with respect to the output. */
function mse(out: Float32Array, y: Float32Array): { loss: number; grad: Float32Array } {
  const grad = new Float32Array(out.length);
  let loss = 0;
  for (let i = 0; i < out.length; i++) {
    const d = out[i] - y[i];
    loss += d * d;
    grad[i] = (2 * d) / out.length;
  }
  return { loss: loss / out.length, grad };
}

/** Mean over clusters of the share of its tokens whose first slot goes to the cluster's most frequent first choice. */
function firstChoicePurity(routing: { experts: Int32Array; topK: number }, cluster: Int32Array, clusters: number, experts: number) {
  const counts = Array.from({ length: clusters }, () => new Array<number>(experts + 1).fill(0));
  for (let t = 0; t < cluster.length; t++) counts[cluster[t]][routing.experts[t * routing.topK] + 1]++; // -1: dropped
  let sum = 0;
  for (const row of counts) {
    const total = row.reduce((a, b) => a + b, 0);
    sum += total > 0 ? Math.max(...row.slice(1)) / total : 0;
  }
  return sum / clusters;
}

/** Each cluster's share of routing weight per expert. */
function routedFractions(
  routing: { experts: Int32Array; weights: Float32Array; topK: number },
  cluster: Int32Array,
  clusters: number,
  experts: number,
): number[][] {
  const table = Array.from({ length: clusters }, () => new Array<number>(experts).fill(0));
  for (let t = 0; t < cluster.length; t++)
    for (let j = 0; j < routing.topK; j++) {
      const e = routing.experts[t * routing.topK + j];
      if (e >= 0) table[cluster[t]][e] += routing.weights[t * routing.topK + j];
    }
  return table.map((row) => {
    const s = row.reduce((a, b) => a + b, 0);
    return row.map((v) => (s > 0 ? v / s : 0));
  });
}

export function trainOne(config: TrainConfig, task: ClusterTask, evalSet: Batch, o: TrainOptions): RunResult {
  const topK = config.topK === 'all' ? o.numExperts : config.topK;
  const layer = MoELayer.random(
    {
      dModel: o.dModel,
      dHidden: o.dHidden,
      numExperts: o.numExperts,
      topK,
      normalizeTopK: config.normalizeTopK ?? true,
      router: { ...config.router, seed: o.seed },
    },
    { seed: o.seed, zeroRouter: config.zeroRouter },
  );
  let bias: Float64Array = new Float64Array(o.numExperts);
  const steps: StepRecord[] = [];
  const evals: EvalRecord[] = [];
  const started = performance.now();
  const evaluate = (step: number) => {
    const r = layer.forwardSync(Tensor.from(evalSet.x, [evalSet.cluster.length, o.dModel]));
    const stats = losses.routingStats(r.routing);
    const table = routedFractions(r.routing, evalSet.cluster, task.o.clusters, o.numExperts);
    evals.push({
      step,
      loss: mse(r.output.data as Float32Array, evalSet.y).loss,
      loadCV: stats.loadCV,
      expertsUsed: stats.expertsUsed,
      dropRate: stats.dropRate,
      specialisation: firstChoicePurity(r.routing, evalSet.cluster, task.o.clusters, o.numExperts),
    });
    return table;
  };
  evaluate(0);
  for (let step = 1; step <= o.steps; step++) {
    const b = task.batch(o.batch, o.seed * 1_000_003 + step);
    const x = Tensor.from(b.x, [o.batch, o.dModel]);
    const r = layer.forwardSync(x, { training: true, auxLosses: config.auxLosses });
    const { loss, grad } = mse(r.output.data as Float32Array, b.y);
    const grads = layer.backward(x, r, Tensor.from(grad, [o.batch, o.dModel])); // the layer's own arrays, reused
    clipGradNorm(grads, 1.0);
    layer.step(grads, { kind: 'adamw', lr: o.lr, weightDecay: 0 });
    if (config.biasUpdate !== undefined) {
      bias = losses.updateBalanceBias(bias, r.routing.tokensPerExpert, config.biasUpdate);
      layer.setRouterBias(bias);
    }
    const stats = losses.routingStats(r.routing);
    steps.push({ step, loss, loadCV: stats.loadCV, expertsUsed: stats.expertsUsed, dropRate: stats.dropRate });
    if (step % o.evalEvery === 0 || step === o.steps) evaluate(step);
  }
  const table = evaluate(o.steps);
  evals.pop(); // the last evaluation is recorded once
  layer.dispose();
  return { name: config.name, source: config.source, topK, steps, evals, table, ms: performance.now() - started };
}
