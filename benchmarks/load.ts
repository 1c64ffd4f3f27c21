/**
 * Loading a checkpoint layer: time, peak RSS and the longest event-loop stall, per weight dtype, each in a fresh
 * process (peak RSS is per process). Generates a Mixtral-shaped one-layer checkpoint first if DIR has none.
 *   node dist/benchmarks/load.js [DIR] [--dtypes bfloat16,int4] [--d-model 4096 --d-hidden 14336 --experts 8]
 */
import { execFileSync } from 'child_process';
import { existsSync } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MoELayer, Tensor, WeightDtype } from '../lib';
import { FlagSpec, parseFlags, usage } from '../tools/flags';
import { writeSyntheticCheckpoint } from '../tools/synthetic-checkpoint';

const FLAGS: FlagSpec[] = [
  { name: 'dtypes', help: 'weight dtypes to load, comma-separated', default: 'bfloat16,int4' },
  { name: 'd-model', help: 'hidden_size of a generated checkpoint', default: 4096 },
  { name: 'd-hidden', help: 'intermediate_size of a generated checkpoint', default: 14336 },
  { name: 'experts', help: 'experts of a generated checkpoint', default: 8 },
  { name: 'layers', help: 'layers of a generated checkpoint (the first is loaded)', default: 1 },
  { name: 'child', help: '(internal) load once with this dtype and print JSON', default: '' },
  { name: 'help', help: 'show this help', default: false },
];

async function child(dir: string, dtype: WeightDtype): Promise<void> {
  let stall = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    stall = Math.max(stall, now - last - 5);
    last = now;
  }, 5);
  const base = process.memoryUsage().rss;
  const t0 = performance.now();
  let readDone = 0;
  const layer = await MoELayer.fromPretrained(dir, {
    weightDtype: dtype,
    onProgress: (p) => {
      if (p.phase === 'pack' && !readDone) readDone = performance.now();
    },
  });
  const loadMs = performance.now() - t0;
  await new Promise((resolve) => setTimeout(resolve, 20)); // let the timer see the last stall
  clearInterval(timer);
  const x = Tensor.randn([1, layer.config.dModel], { seed: 1 });
  layer.forwardSync(x);
  const t1 = performance.now();
  for (let i = 0; i < 5; i++) layer.forwardSync(x);
  const decodeMs = (performance.now() - t1) / 5;
  const peak = process.resourceUsage().maxRSS * 1024;
  console.log(
    JSON.stringify({
      dtype,
      loadMs,
      readMs: readDone - t0,
      packMs: loadMs - (readDone - t0),
      stallMs: stall,
      baseRss: base,
      peakRss: peak,
      packed: layer.packedBytes,
      decodeMs,
    }),
  );
  layer.dispose();
}

async function main(): Promise<void> {
  const [first, ...rest] = process.argv.slice(2);
  const positional = first && !first.startsWith('--');
  const f = parseFlags(positional ? rest : process.argv.slice(2), FLAGS);
  if (f.help) return void process.stdout.write(usage('node dist/benchmarks/load.js [DIR] [flags]', FLAGS));
  const dir = positional ? first : path.join(os.tmpdir(), `moe-synthetic-${f['d-model']}x${f['d-hidden']}x${f.experts}`);
  if (f.child) return child(dir, String(f.child) as WeightDtype);
  if (!existsSync(path.join(dir, 'config.json'))) {
    console.log(`writing a synthetic checkpoint to ${dir} ...`);
    await writeSyntheticCheckpoint(dir, {
      dModel: Number(f['d-model']),
      dHidden: Number(f['d-hidden']),
      experts: Number(f.experts),
      topK: 2,
      layers: Number(f.layers),
    });
  }
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  console.log(`| weightDtype | load (s) | read (s) | pack (s) | longest event-loop stall (ms) | peak RSS | packed | decode 1 token (ms) |`);
  console.log(`|---|---|---|---|---|---|---|---|`);
  for (const dtype of String(f.dtypes).split(',')) {
    const out = execFileSync(process.execPath, [__filename, dir, '--child', dtype], { encoding: 'utf8' });
    const r = JSON.parse(out.trim().split('\n').pop()!);
    console.log(
      `| ${dtype} | ${(r.loadMs / 1000).toFixed(2)} | ${(r.readMs / 1000).toFixed(2)} | ${(r.packMs / 1000).toFixed(2)} | ${r.stallMs.toFixed(0)} | ${mib(r.peakRss)} | ${mib(r.packed)} | ${r.decodeMs.toFixed(1)} |`,
    );
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
