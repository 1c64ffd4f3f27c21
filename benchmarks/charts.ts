/**
 * The SVG chart of each shape from a benchmark result: throughput against tokens for every implementation at
 * the largest thread count, with the roofline of the ceilings measured in the same run.
 * Also a command: node dist/benchmarks/charts.js benchmarks/results/<machine kind>/latest.json  (rewrites its charts)
 */
import * as fs from 'fs';
import * as path from 'path';
import { activeWeightBytes, layerFlops } from '../lib';
import { lineChart } from './chart';
import { SHAPES } from './shapes';

export interface Row {
  shape: string;
  threads: number;
  tokens: number;
  implementation: string;
  medianMs: number;
  minMs: number;
  maxMs: number;
  /** Forwards timed back to back in each repetition (cycling through the inputs); the times are per forward. */
  callsPerRepetition: number;
  gflops: number;
  /** GB/s of the weights of the experts this batch touched. */
  activeGBps: number;
  /**
   * The ceiling that applies (FMA peak in GFLOP/s from 128 tokens on, memory read bandwidth in GB/s below), as
   * measured between this scenario's repetitions: the median of one measurement per repetition.
   */
  ceiling: number;
  /** Share of that ceiling: gflops / ceiling from 128 tokens on, activeGBps / ceiling below. */
  roofline: number;
}

export interface BenchResult {
  date: string;
  command: string;
  isa: string;
  node: string;
  ceilings: Record<number, { fmaGflops: number; readGBps: number }>;
  rows: Row[];
  extras: Record<string, unknown>;
  notes: string[];
}

export function writeCharts(result: BenchResult, outDir: string): string[] {
  const written: string[] = [];
  const threads = Math.max(...result.rows.map((r) => r.threads));
  const c = result.ceilings[threads];
  for (const shape of SHAPES) {
    const mine = result.rows.filter((r) => r.shape === shape.name && r.threads === threads);
    if (mine.length === 0) continue;
    const tokens = [...new Set(mine.map((r) => r.tokens))].sort((a, b) => a - b);
    const cfg = { dModel: shape.dModel, dHidden: shape.dHidden, numExperts: shape.numExperts, topK: shape.topK };
    const roof = tokens.map((t) => {
      const hit = Math.min(shape.numExperts, Math.round(shape.numExperts * (1 - (1 - shape.topK / shape.numExperts) ** t)));
      const intensity = layerFlops(cfg, t) / activeWeightBytes(cfg, Math.max(1, hit)); // flop per byte of weights
      return [t, Math.min(c.fmaGflops, c.readGBps * intensity)] as [number, number];
    });
    const names = [...new Set(mine.map((r) => r.implementation))];
    const svg = lineChart(
      `${shape.name}: dModel ${shape.dModel}, dHidden ${shape.dHidden}, ${shape.numExperts} experts, top-${shape.topK}, fp32, ${threads} threads`,
      `${result.isa}; roofline = min(FMA peak ${c.fmaGflops.toFixed(0)} GFLOP/s, ${c.readGBps.toFixed(0)} GB/s x intensity); ${result.date.slice(0, 10)}`,
      [
        ...names.map((n) => ({
          name: n,
          points: mine.filter((r) => r.implementation === n).map((r) => [r.tokens, r.gflops] as [number, number]),
        })),
        { name: 'roofline', points: roof, dashed: true },
      ],
    );
    const file = path.join(outDir, `chart-${shape.name}.svg`);
    fs.writeFileSync(file, svg);
    written.push(file);
  }
  return written;
}

if (require.main === module) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node dist/benchmarks/charts.js RESULT.json [OUT_DIR]');
    process.exit(2);
  }
  const written = writeCharts(JSON.parse(fs.readFileSync(file, 'utf8')) as BenchResult, process.argv[3] ?? path.dirname(file));
  console.log(`wrote ${written.join(', ')}`);
}
