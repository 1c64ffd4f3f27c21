/**
 * The experiment of `npm run train` (tools/train): its data are seeded and cluster-shaped, and a short run trains
 * (the evaluation loss falls, routing specialises to clusters); the chart is well-formed SVG.
 */
import { stepCharts } from '../tools/train/chart';
import { ClusterTask } from '../tools/train/clusters';
import { trainConfigs } from '../tools/train/configs';
import { trainOne } from '../tools/train/run';

const options = { dModel: 16, clusters: 4, teacherHidden: 4, separation: 4, labelNoise: 0.1, seed: 3 };

test('the cluster task is seeded, and its clusters are what the targets depend on', () => {
  const task = new ClusterTask(options);
  const a = task.batch(64, 11);
  expect(Buffer.from(new ClusterTask(options).batch(64, 11).y.buffer).equals(Buffer.from(a.y.buffer))).toBe(true);
  expect(new Set(a.cluster).size).toBe(4);
  // the same input under two clusters' teachers gives different targets: the clusters have teachers of their own
  const clean = task.batch(256, 12, false);
  const mean = (c: number) => {
    const rows = clean.cluster.reduce((n, k) => n + Number(k === c), 0);
    return clean.y.filter((_, i) => clean.cluster[Math.floor(i / 16)] === c).reduce((s, v) => s + v * v, 0) / (rows * 16);
  };
  for (let c = 0; c < 4; c++) expect(mean(c)).toBeGreaterThan(0.01);
});

test('a short run of each configuration trains the layer', () => {
  const task = new ClusterTask(options);
  const evalSet = task.batch(256, 13, false);
  for (const config of trainConfigs(0.01)) {
    const r = trainOne(config, task, evalSet, {
      dModel: 16,
      dHidden: 8,
      numExperts: 4,
      steps: 120,
      batch: 64,
      lr: 3e-3,
      evalEvery: 40,
      seed: 5,
    });
    const first = r.evals[0];
    const last = r.evals[r.evals.length - 1];
    expect([config.name, last.step, r.steps.length]).toEqual([config.name, 120, 120]);
    expect([config.name, last.loss < 0.7 * first.loss]).toEqual([config.name, true]);
    for (const row of r.table) expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
  }
});

test('the chart', () => {
  const svg = stepCharts('t', 's', [
    {
      title: 'loss',
      log: true,
      lines: [
        {
          name: 'a & b',
          points: [
            [0, 1],
            [10, 0.1],
          ],
        },
      ],
    },
    {
      title: 'cv',
      log: false,
      lines: [
        {
          name: 'a & b',
          points: [
            [0, 0],
            [10, 0.5],
          ],
        },
      ],
    },
  ]);
  expect(svg.startsWith('<svg')).toBe(true);
  expect(svg).toContain('a &amp; b');
  expect(svg.match(/<path /g)).toHaveLength(2);
});
