/**
 * The mixture-of-clusters task of Chen et al. 2022 ("Towards Understanding Mixture of Experts in Deep Learning"),
 * as regression: inputs come from `clusters` well-separated Gaussian clusters, and each cluster has its own teacher,
 * a small random SwiGLU network (teacherHidden units). One expert of dHidden >= teacherHidden units can fit one
 * teacher but not all of them, so the task rewards routing each cluster to experts of its own.
 */
import { Random } from '../../lib/random';

export interface ClusterTaskOptions {
  dModel: number;
  clusters: number;
  teacherHidden: number;
  /** Distance of the cluster centres from the origin (in units of the input noise). */
  separation: number;
  /** Std of the observation noise added to the targets. */
  labelNoise: number;
  seed: number;
}

export interface Batch {
  x: Float32Array; // [tokens, dModel]
  y: Float32Array; // [tokens, dModel]
  cluster: Int32Array; // [tokens]
}

export class ClusterTask {
  private readonly centres: Float64Array[];
  private readonly teachers: { w1: Float64Array; w3: Float64Array; w2: Float64Array }[];
  constructor(readonly o: ClusterTaskOptions) {
    const rng = new Random(o.seed);
    const gauss = (n: number, std: number) => Float64Array.from({ length: n }, () => rng.normal() * std);
    this.centres = Array.from({ length: o.clusters }, () => {
      const v = gauss(o.dModel, 1);
      const norm = Math.hypot(...v);
      return v.map((x) => (x / norm) * o.separation);
    });
    const d = o.dModel;
    const h = o.teacherHidden;
    this.teachers = Array.from({ length: o.clusters }, () => ({
      w1: gauss(h * d, 1 / Math.sqrt(d)),
      w3: gauss(h * d, 1 / Math.sqrt(d)),
      w2: gauss(d * h, 1 / Math.sqrt(h)),
    }));
  }

  /** The teacher of cluster c at x (float64). */
  private teach(c: number, x: ArrayLike<number>, out: Float32Array, at: number, noise: () => number) {
    const { dModel: d, teacherHidden: h } = this.o;
    const t = this.teachers[c];
    const a = new Float64Array(h);
    for (let j = 0; j < h; j++) {
      let g = 0;
      let u = 0;
      for (let i = 0; i < d; i++) {
        g += t.w1[j * d + i] * x[i];
        u += t.w3[j * d + i] * x[i];
      }
      a[j] = (g / (1 + Math.exp(-g))) * u;
    }
    for (let i = 0; i < d; i++) {
      let s = 0;
      for (let j = 0; j < h; j++) s += t.w2[i * h + j] * a[j];
      out[at + i] = s + noise();
    }
  }

  /** `tokens` samples, clusters drawn uniformly; `labelNoise` false for a clean evaluation set. */
  batch(tokens: number, seed: number, labelNoise = true): Batch {
    const { dModel: d, clusters } = this.o;
    const rng = new Random(seed);
    const x = new Float32Array(tokens * d);
    const y = new Float32Array(tokens * d);
    const cluster = new Int32Array(tokens);
    const noise = labelNoise ? () => rng.normal() * this.o.labelNoise : () => 0;
    const row = new Float64Array(d);
    for (let t = 0; t < tokens; t++) {
      const c = Math.min(clusters - 1, Math.floor(rng.uniform() * clusters));
      cluster[t] = c;
      for (let i = 0; i < d; i++) {
        row[i] = this.centres[c][i] + rng.normal();
        x[t * d + i] = row[i];
      }
      this.teach(c, row, y, t * d, noise);
    }
    return { x, y, cluster };
  }
}
