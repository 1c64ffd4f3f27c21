/**
 * Where benchmark results go, per machine kind: the latest run's JSON and charts (benchmarks/results/<kind>/latest.json,
 * chart-*.svg) and its headline numbers as a small table (summary.csv), and one line per headline number of every run
 * in benchmarks/results/history.csv. Only summary.csv is committed, one per machine kind: the rest is generated and
 * large, a local record that git ignores (the README's and docs/speed.md's numbers cite the run they come from).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { BenchResult, writeCharts } from './charts';

/** The headline implementations: ours, and the peers a user would compare it with. */
const HEADLINE = [
  'moe-kernels',
  'onnxruntime',
  'pytorch (HF loop)',
  'moe-kernels bf16',
  'moe-kernels int8',
  'moe-kernels int4',
  'pytorch bf16 (HF loop)',
] as const;
// Columns are only ever appended (older lines leave the new ones empty; saveResult rewrites the header line).
export const HISTORY_HEADER =
  'date,machine,shape,threads,tokens,moe_kernels_ms,onnxruntime_ms,pytorch_ms,vs_onnxruntime,moe_kernels_bf16_ms,' +
  'moe_kernels_int8_ms,moe_kernels_int4_ms,pytorch_bf16_ms';

/** A name for the kind of machine a run measured: OS, CPU architecture, the active ISA and the CPUs it saw. */
export function machineKind(isa: string, cpus = os.cpus().length): string {
  return `${os.platform()}-${os.arch()}-${isa}-${cpus}cpu`;
}

/** The run's headline numbers: per shape and token count, at its largest thread count, one CSV line. */
export function historyLines(result: BenchResult, machine: string): string[] {
  const threads = Math.max(...result.rows.map((r) => r.threads));
  const keys = [...new Set(result.rows.filter((r) => r.threads === threads).map((r) => `${r.shape}\t${r.tokens}`))];
  return keys.map((key) => {
    const [shape, tokens] = key.split('\t');
    const ms = HEADLINE.map(
      (impl) =>
        result.rows.find((r) => r.shape === shape && String(r.tokens) === tokens && r.threads === threads && r.implementation === impl)
          ?.medianMs,
    );
    const ratio = ms[0] !== undefined && ms[1] !== undefined ? (ms[1] / ms[0]).toFixed(2) : '';
    const cell = (v: number | undefined) => (v === undefined ? '' : v.toPrecision(4));
    return [result.date, machine, shape, threads, tokens, ...ms.slice(0, 3).map(cell), ratio, ...ms.slice(3).map(cell)].join(',');
  });
}

/** The run's headline numbers as a CSV file of their own: the one committed summary per machine kind. */
export function summaryCsv(result: BenchResult, machine: string): string {
  return [`# ${result.command} (${result.node}, ${result.isa})`, HISTORY_HEADER, ...historyLines(result, machine)].join('\n') + '\n';
}

/**
 * Writes <out>/<machine>/latest.json, its charts and summary.csv, and appends the headline lines to <out>/history.csv.
 */
export function saveResult(result: BenchResult, outDir: string, machine: string): string {
  const folder = path.join(outDir, machine);
  fs.mkdirSync(folder, { recursive: true });
  fs.writeFileSync(path.join(folder, 'latest.json'), JSON.stringify(result, null, 1) + '\n');
  fs.writeFileSync(path.join(folder, 'summary.csv'), summaryCsv(result, machine));
  writeCharts(result, folder);
  const history = path.join(outDir, 'history.csv');
  if (!fs.existsSync(history)) fs.writeFileSync(history, HISTORY_HEADER + '\n');
  const lines = fs.readFileSync(history, 'utf8').split('\n');
  if (lines[0] !== HISTORY_HEADER) fs.writeFileSync(history, [HISTORY_HEADER, ...lines.slice(1)].join('\n'));
  fs.appendFileSync(
    history,
    historyLines(result, machine)
      .map((l) => l + '\n')
      .join(''),
  );
  return folder;
}
