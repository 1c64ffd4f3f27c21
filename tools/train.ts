/**
 * `npm run train`: the article's experiments (issue 19). Six routing configurations train the same MoE layer, from
 * the same seeds for the same steps, on the mixture-of-clusters task (tools/train/clusters.ts), with the library's
 * forward, backward and AdamW alone. Prints a summary and each configuration's cluster x expert table, and writes
 * results.json and chart.svg (evaluation loss, load CV and specialisation per step) to --out.
 *   npm run train -- [--steps 1500] [--seeds 3] [--batch 256] [--experts 8] [--clusters 8] [--seed 1] [--out experiments/results]
 */
import * as fs from 'fs';
import * as path from 'path';
import { setThreads } from '../lib';
import { FlagSpec, parseFlags, usage } from './flags';
import { stepCharts } from './train/chart';
import { ClusterTask } from './train/clusters';
import { trainConfigs } from './train/configs';
import { RunResult, trainOne } from './train/run';

const FLAGS: FlagSpec[] = [
  { name: 'steps', help: 'training steps per configuration', default: 1500 },
  { name: 'batch', help: 'tokens per step', default: 256 },
  { name: 'experts', help: 'experts in the layer', default: 8 },
  { name: 'clusters', help: 'clusters in the data (each with its own teacher)', default: 8 },
  { name: 'dmodel', help: 'input and output width', default: 32 },
  { name: 'dhidden', help: "each expert's hidden width", default: 16 },
  { name: 'teacher', help: "each teacher's hidden width", default: 8 },
  { name: 'lr', help: 'AdamW learning rate', default: 3e-3 },
  { name: 'gamma', help: "DeepSeek-V3's bias update speed", default: 1e-2 },
  { name: 'eval-every', help: 'steps between evaluations', default: 20 },
  { name: 'seed', help: 'seed of the data and the initial weights (the first, with --seeds)', default: 1 },
  { name: 'seeds', help: 'seeds to run each configuration from (seed, seed + 1, ...)', default: 3 },
  { name: 'only', help: 'run only the configurations whose names contain this', default: '' },
  { name: 'threads', help: 'threads (0: all cores)', default: 0 },
  { name: 'out', help: 'results folder', default: 'experiments/results' },
  { name: 'help', help: 'show this help', default: false },
];

const f = parseFlags(process.argv.slice(2), FLAGS);
if (f.help) {
  process.stdout.write(usage('npm run train -- [flags]', FLAGS));
  process.exit(0);
}
if (Number(f.threads) > 0) setThreads(Number(f.threads));
const o = {
  dModel: Number(f.dmodel),
  dHidden: Number(f.dhidden),
  numExperts: Number(f.experts),
  steps: Number(f.steps),
  batch: Number(f.batch),
  lr: Number(f.lr),
  evalEvery: Number(f['eval-every']),
  seed: Number(f.seed),
};
const task = new ClusterTask({
  dModel: o.dModel,
  clusters: Number(f.clusters),
  teacherHidden: Number(f.teacher),
  separation: 4,
  labelNoise: 0.1,
  seed: o.seed,
});
const evalSet = task.batch(2048, o.seed + 7919, false);
const targetVariance = evalSet.y.reduce((a, v) => a + v * v, 0) / evalSet.y.length;
const configs = trainConfigs(Number(f.gamma)).filter((c) => c.name.includes(String(f.only)));
console.log(
  `mixture of ${task.o.clusters} clusters, dModel ${o.dModel}, ${o.numExperts} experts of ${o.dHidden} hidden units ` +
    `(teachers of ${task.o.teacherHidden}), ${o.steps} steps of ${o.batch} tokens, AdamW lr ${o.lr}, seed ${o.seed}; ` +
    `the targets' mean square (the loss of predicting 0) is ${targetVariance.toFixed(3)}`,
);

// Every configuration from the same seeds; the summary gives the mean over seeds and the range.
const seeds = Array.from({ length: Number(f.seeds) }, (_, i) => o.seed + i);
const tasks = seeds.map((seed) => {
  const t = new ClusterTask({ ...task.o, seed });
  return { seed, task: t, evalSet: seed === o.seed ? evalSet : t.batch(2048, seed + 7919, false) };
});
const runs: { name: string; source: string; topK: number; bySeed: RunResult[] }[] = [];
const fmt = (v: number[], digits: number, scale = 1) => {
  const mean = (v.reduce((a, b) => a + b, 0) / v.length) * scale;
  return v.length === 1
    ? mean.toFixed(digits)
    : `${mean.toFixed(digits)} (${(Math.min(...v) * scale).toFixed(digits)}-${(Math.max(...v) * scale).toFixed(digits)})`;
};
for (const c of configs) {
  const bySeed = tasks.map((t) => trainOne(c, t.task, t.evalSet, { ...o, seed: t.seed }));
  runs.push({ name: c.name, source: c.source, topK: bySeed[0].topK, bySeed });
  const last = bySeed.map((r) => r.evals[r.evals.length - 1]);
  console.log(
    `${c.name.padEnd(26)} eval loss ${fmt(
      last.map((e) => e.loss),
      4,
    )} · load CV ${fmt(
      last.map((e) => e.loadCV),
      2,
    )} · ` +
      `experts used ${fmt(
        last.map((e) => e.expertsUsed),
        1,
      )} · drop ${fmt(
        last.map((e) => e.dropRate),
        1,
        100,
      )}% · ` +
      `specialisation ${fmt(
        last.map((e) => e.specialisation),
        2,
      )} · ${(bySeed.reduce((a, r) => a + r.ms, 0) / 1000).toFixed(1)} s`,
  );
}
const results = runs.map((r) => r.bySeed[0]);
console.log(`\nEach cluster's share of routing weight per expert (%), evaluation set, end of training, seed ${o.seed}:`);
for (const r of results) {
  console.log(`${r.name} (top-${r.topK}):`);
  console.log(`  cluster ${Array.from({ length: o.numExperts }, (_, e) => `e${e}`.padStart(4)).join('')}`);
  r.table.forEach((row, c) =>
    console.log(`  ${String(c).padStart(7)} ${row.map((v) => String(Math.round(100 * v)).padStart(4)).join('')}`),
  );
}

// Training-batch curves are noisy: a moving average over an evaluation interval.
const smooth = (v: number[], w: number) =>
  v.map((_, i) => v.slice(Math.max(0, i - w + 1), i + 1).reduce((a, b) => a + b, 0) / Math.min(i + 1, w));
const out = path.resolve(String(f.out));
fs.mkdirSync(out, { recursive: true });
const subtitle =
  `${task.o.clusters} clusters, ${o.numExperts} experts (dHidden ${o.dHidden}), ${o.steps} steps x ${o.batch} tokens, ` +
  `mean of ${seeds.length} seed${seeds.length > 1 ? 's' : ''}`;
const meanOf = (rows: number[][]) => rows[0].map((_, i) => rows.reduce((a, r) => a + r[i], 0) / rows.length);
// A training-batch metric averaged over seeds, smoothed over an evaluation interval, every fifth step.
const curve = (bySeed: RunResult[], pick: (s: RunResult['steps'][number]) => number): Array<[number, number]> =>
  smooth(meanOf(bySeed.map((r) => r.steps.map(pick))), o.evalEvery)
    .map((v, i): [number, number] => [i + 1, v])
    .filter(([step]) => step % 5 === 0 || step === 1);
const svg = stepCharts('Routing rules on the mixture-of-clusters task', subtitle, [
  {
    title: 'task loss (evaluation set, MSE)',
    log: true,
    lines: runs.map((r) => ({
      name: r.name,
      points: meanOf(r.bySeed.map((s) => s.evals.map((e) => e.loss))).map((v, i) => [r.bySeed[0].evals[i].step, v]),
    })),
  },
  {
    title: 'load CV (training batches)',
    log: false,
    lines: runs.map((r) => ({
      name: r.name,
      points: curve(r.bySeed, (x) => x.loadCV),
    })),
  },
  {
    title: 'specialisation (evaluation set)',
    log: false,
    lines: runs.map((r) => ({
      name: r.name,
      points: meanOf(r.bySeed.map((s) => s.evals.map((e) => e.specialisation))).map((v, i) => [r.bySeed[0].evals[i].step, v]),
    })),
  },
]);
fs.writeFileSync(path.join(out, 'chart.svg'), svg);
// The JSON keeps what the charts and the summary show: evaluations, training curves every evalEvery steps, tables.
const round = (v: number) => +v.toPrecision(4);
fs.writeFileSync(
  path.join(out, 'results.json'),
  JSON.stringify(
    {
      options: { ...o, seeds, clusters: task.o.clusters, teacherHidden: task.o.teacherHidden, gamma: Number(f.gamma) },
      runs: runs.map((r) => ({
        name: r.name,
        source: r.source,
        topK: r.topK,
        seeds: r.bySeed.map((s, i) => ({
          seed: seeds[i],
          seconds: round(s.ms / 1000),
          evals: s.evals.map((e) => Object.fromEntries(Object.entries(e).map(([k, v]) => [k, round(v)]))),
          training: Object.fromEntries(
            (['loss', 'loadCV', 'expertsUsed', 'dropRate'] as const).map((k) => [
              k,
              smooth(
                s.steps.map((x) => x[k]),
                o.evalEvery,
              )
                .filter((_, i) => (i + 1) % o.evalEvery === 0)
                .map(round),
            ]),
          ),
          table: s.table.map((row) => row.map(round)),
        })),
      })),
    },
    null,
    0,
  ) + '\n',
);
console.log(`\nwrote ${path.relative(process.cwd(), path.join(out, 'results.json'))} and chart.svg`);
