/**
 * `npm run bench`: moe-kernels against the peers a user would pick instead, in one run, on the same weights
 * and inputs, alternating implementations (in a shuffled order) every repetition to cancel drift; every result is
 * also given as a share of the machine's own ceilings (FMA peak for prefill, memory bandwidth for decode),
 * measured here, between the repetitions of each scenario.
 * Writes a table to stdout; the JSON and an SVG chart per shape to benchmarks/results/<machine kind>/ (the latest run
 * only), and the headline numbers as lines of benchmarks/results/history.csv (history.ts).
 *   npm run bench -- --quick        (under a minute; CI runs it to keep the harness working)
 *   npm run bench -- --shapes small --threads 2 --repeat 7
 *   npm run bench -- --shapes small --tokens 1,512 --threads 2
 */
import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  GroupSize,
  MoELayer,
  MoEWeights,
  ReadProbe,
  WeightDtype,
  Tensor,
  activeWeightBytes,
  backendInfo,
  layerFlops,
  measureFmaPeak,
  setThreads,
} from '../lib';
import { Random } from '../lib/random';
import { FlagSpec, median, parseFlags, usage } from '../tools/flags';
import { BenchResult, Row } from './charts';
import { machineKind, saveResult } from './history';
import { createOrtMoE } from './peers/onnxruntime';
import { naiveMoE } from './peers/naive';
import { GgmlType, ggmlUnavailable, startGgml } from './peers/ggml';
import { PeerMoE } from './peers/line-peer';
import { startTorch, tempFolder, torchUnavailable } from './peers/torch';
import { Progress } from './progress';
import { QUICK, SHAPES, Shape, weightBytes } from './shapes';

const FLAGS: FlagSpec[] = [
  { name: 'quick', help: 'small shape, 1 and 128 tokens, 2 threads, 2 repetitions', default: false },
  { name: 'shapes', help: `comma-separated: ${SHAPES.map((s) => s.name).join(', ')}`, default: SHAPES.map((s) => s.name).join(',') },
  { name: 'tokens', help: "comma-separated token counts to keep (default: each shape's own list)", default: '' },
  { name: 'threads', help: 'comma-separated thread counts', default: '1,2' },
  { name: 'repeat', help: 'timed repetitions per implementation', default: 5 },
  { name: 'torch', help: 'include PyTorch (Debian python3-torch) when installed', default: true },
  { name: 'ggml', help: 'include ggml when built (bash benchmarks/peers/ggml/build.sh)', default: true },
  {
    name: 'kquants',
    help: "add q4_k / q6_k rows, ours and ggml's (both quantize with ggml's reference quantizer: ~15 s per 70M weights each)",
    default: false,
  },
  {
    name: 'onnxruntime',
    help: 'include onnxruntime-node (a large shape with every peer can leave this VM short of memory)',
    default: true,
  },
  { name: 'out', help: 'folder for the JSON and SVG results', default: 'benchmarks/results' },
  {
    name: 'expert-cache',
    help: 'instead: decode through an ExpertCache against the page cache (48 Qwen3-30B-A3B-shaped int4 layers, ~16 GB on disk)',
    default: false,
  },
  { name: 'expert-cache-dir', help: 'where its stores are generated (once) and read', default: '/var/tmp/moe-expert-cache-bench' },
  { name: 'expert-cache-layers', help: 'layers of its model', default: 48 },
  { name: 'expert-cache-tokens', help: 'timed decode tokens per budget', default: 32 },
  { name: 'help', help: 'show this help', default: false },
];

/**
 * One implementation: `run(first, calls)` does `calls` forwards back to back, cycling through the inputs from
 * inputs[first], and returns their total milliseconds.
 */
type Impl = {
  name: string;
  run: (first: number, calls: number) => Promise<number>;
  /** Bytes it stores against the float32 layer's (packedBytes; bfloat16: 0.5), for its bandwidth share. */
  weightScale?: number;
  /**
   * Milliseconds to wait after its block, untimed, before the next implementation runs: ggml's OpenMP threads keep
   * spinning a few milliseconds after a graph (GOMP's default, which llama.cpp users get), on the cores the next
   * implementation needs. Without the wait, our int4 decode measured 0.27 -> 0.57 ms with ggml in the run.
   */
  settleMs?: number;
};

// A timed repetition is a block of forwards lasting at least this long (at least one forward), and its time is
// the mean per forward: a single 1-token forward (~1-2 ms) right after another implementation measured mostly
// how long this VM takes to wake idle cores (0.2-0.7 ms after a pause, NOTES.md row 22), not the implementation.
const BLOCK_MS = 20;
// Up to 64 forwards: after another implementation touched other memory, the first forward over each input's experts
// runs up to 2x slower in this VM (the host's translations of our weights are gone, NOTES.md rows 50 and 63), and a
// block of 16 sub-millisecond forwards (int4 decode) was a quarter of such forwards.
const MAX_BLOCK_CALLS = 64;
// Decode blocks cycle through this many inputs, picked so that consecutive ones route to different experts
// where the shape allows: the weights of each forward then come from memory, as in a model whose other layers
// run in between, not from the cache the previous forward filled.
const DECODE_INPUTS = 4;

function weightsFor(s: Shape, seed: number): MoEWeights {
  const rng = new Random(seed);
  const next = () => rng.nextUint32();
  return {
    router: Tensor.randn([s.numExperts, s.dModel], { seed: next(), std: 1 / Math.sqrt(s.dModel) }),
    w1: Tensor.randn([s.numExperts, s.dHidden, s.dModel], { seed: next(), std: 1 / Math.sqrt(s.dModel) }),
    w3: Tensor.randn([s.numExperts, s.dHidden, s.dModel], { seed: next(), std: 1 / Math.sqrt(s.dModel) }),
    w2: Tensor.randn([s.numExperts, s.dModel, s.dHidden], { seed: next(), std: 1 / Math.sqrt(s.dHidden) }),
  };
}

function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}

/** 0..n-1 in a random order (Fisher-Yates). */
function shuffled(n: number, rng: Random): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.nextUint32() % (i + 1);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/**
 * `count` inputs of `tokens` rows (seeded), with the experts each one routes to. From the second on, each is the
 * first candidate whose experts are disjoint from the previous input's, when one of 64 candidates is: a 1-token
 * decode on 8 experts then reads other weights at every forward.
 */
function decodeInputs(layer: MoELayer, tokens: number, dModel: number, count: number): { xs: Tensor<'float32'>[]; hits: number[] } {
  const make = (seed: number) => Tensor.randn([tokens, dModel], { seed });
  const experts = (x: Tensor) => new Set(layer.forwardSync(x).routing.experts);
  const xs = [make(100 + tokens)];
  const sets = [experts(xs[0])];
  for (let seed = 1000 * tokens; xs.length < count;) {
    const previous = sets[sets.length - 1];
    for (let tries = 0; tries < 64; tries++, seed++) {
      const candidate = make(seed);
      const hit = experts(candidate);
      if (tries < 63 && [...hit].some((e) => previous.has(e))) continue;
      xs.push(candidate);
      sets.push(hit);
      break;
    }
  }
  return { xs, hits: sets.map((e) => e.size) };
}

/** The low-precision rows: the same weights stored another way (see MoEConfig.weightDtype). */
const DTYPE_ROWS: { name: string; weightDtype: WeightDtype; groupSize?: GroupSize }[] = [
  { name: 'moe-kernels bf16', weightDtype: 'bfloat16' },
  { name: 'moe-kernels int8', weightDtype: 'int8' },
  { name: 'moe-kernels int8 (row scales)', weightDtype: 'int8', groupSize: 'row' },
  { name: 'moe-kernels int4', weightDtype: 'int4' },
];
/** With --kquants: llama.cpp's K-quants (GGUF's Q4_K and Q6_K blocks, docs/gguf.md). */
const K_ROWS: typeof DTYPE_ROWS = [
  { name: 'moe-kernels q4_k', weightDtype: 'q4_k' },
  { name: 'moe-kernels q6_k', weightDtype: 'q6_k' },
];

/** ggml's rows: its weight types, with their bytes against float32's (per 32 weights: Q8_0 34 bytes, Q4_0 18). */
const GGML_ROWS: { type: GgmlType; weightScale: number }[] = [
  { type: 'f32', weightScale: 1 },
  { type: 'bf16', weightScale: 0.5 },
  { type: 'q8_0', weightScale: 34 / 128 },
  { type: 'q4_0', weightScale: 18 / 128 },
];
/** With --kquants (per 256 weights: Q4_K 144 bytes, Q6_K 210). */
const GGML_K_ROWS: typeof GGML_ROWS = [
  { type: 'q4_k', weightScale: 144 / 1024 },
  { type: 'q6_k', weightScale: 210 / 1024 },
];
/** How long ggml's idle OpenMP threads may spin after a block (GOMP_SPINCOUNT's 300,000 rounds: a few ms here). */
const GGML_SETTLE_MS = 30;
/** Which ggml row stores the same bytes as each of our rows (the ratio column). */
const SAME_DTYPE: Record<string, string> = {
  'moe-kernels': 'ggml f32',
  'moe-kernels async': 'ggml f32',
  'moe-kernels (out)': 'ggml f32',
  'moe-kernels bf16': 'ggml bf16',
  'moe-kernels int8': 'ggml q8_0',
  'moe-kernels int4': 'ggml q4_0',
  'moe-kernels q4_k': 'ggml q4_k',
  'moe-kernels q6_k': 'ggml q6_k',
};

const timed = async (fn: () => unknown): Promise<number> => {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
};

/**
 * --expert-cache (issue 32): the C++ driver benchmarks/native/expert_cache_bench.cpp (built with the tests in a clone)
 * generates the stores once, then decodes through an ExpertCache and through the page cache at budgets of 100, 50, 25
 * and 10% of the routed experts' bytes; its table is printed and saved beside the other results.
 */
async function expertCacheBench(dir: string, layers: number, tokens: number, out: string): Promise<void> {
  const driver = path.join(__dirname, '..', '..', 'build', 'moe_expert_cache_bench');
  if (!fs.existsSync(driver)) throw new Error(`${driver} is not built: cmake -S . -B build -G Ninja && cmake --build build`);
  fs.mkdirSync(dir, { recursive: true });
  const last = path.join(dir, `layer${layers - 1}.moestore`);
  if (!fs.existsSync(last)) execFileSync(driver, ['generate', dir, String(layers)], { stdio: 'inherit' });
  // (printed row by row as the driver measures them: a run takes minutes)
  const child = spawn(driver, ['run', dir, String(layers), String(tokens), '100,50,25,10'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let table = '';
  child.stdout.on('data', (chunk: Buffer) => {
    table += chunk.toString();
    process.stdout.write(chunk);
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`${driver} run exited with ${code}`);
  const folder = path.join(out, machineKind(backendInfo().isa));
  fs.mkdirSync(folder, { recursive: true });
  fs.writeFileSync(path.join(folder, 'expert-cache.md'), `# npm run bench -- --expert-cache (${new Date().toISOString()})\n\n${table}`);
}

async function main(): Promise<void> {
  const f = parseFlags(process.argv.slice(2), FLAGS);
  if (f.help) return void process.stdout.write(usage('npm run bench -- [flags]', FLAGS));
  if (f['expert-cache'])
    return expertCacheBench(
      String(f['expert-cache-dir']),
      Number(f['expert-cache-layers']),
      Number(f['expert-cache-tokens']),
      String(f.out),
    );
  const quick = Boolean(f.quick);
  const dtypeRows = f.kquants ? [...DTYPE_ROWS, ...K_ROWS] : DTYPE_ROWS;
  const ggmlRows = f.kquants ? [...GGML_ROWS, ...GGML_K_ROWS] : GGML_ROWS;
  const keep = String(f.tokens) ? String(f.tokens).split(',').map(Number) : undefined;
  const shapes = (
    quick
      ? QUICK
      : String(f.shapes)
          .split(',')
          .map((n) => {
            const s = SHAPES.find((x) => x.name === n.trim());
            if (!s) throw new Error(`unknown shape '${n}' (${SHAPES.map((x) => x.name).join(', ')})`);
            return s;
          })
  )
    .map((s) => (keep ? { ...s, tokens: s.tokens.filter((t) => keep.includes(t)) } : s))
    .filter((s) => s.tokens.length > 0);
  const threadCounts = quick ? [2] : String(f.threads).split(',').map(Number);
  const repeat = quick ? 2 : Number(f.repeat);
  const torchReason = f.torch ? torchUnavailable() : 'disabled with --torch=false';
  const ggmlReason = f.ggml ? ggmlUnavailable() : 'disabled with --ggml=false';
  const info = backendInfo();
  const log = (s: string) => console.log(s);

  // --- the machine's ceilings, in this run -------------------------------------------------------------
  // Each scenario takes its own between its repetitions (below): this machine's read bandwidth moves 26-76 GB/s
  // from one quarter hour to the next (measured in NOTES.md rows 49 and 51). These, measured before the runs and again after
  // them, keeping the better of the two, are the run's summary and the charts' roofline. The read probe's buffer
  // is written once, here: fresh memory between the repetitions would slow what runs next (the host then faults
  // our weights in again: a fine-grained 128-token forward went from 55-62 ms to 80-156 ms, NOTES.md row 50).
  const probe = new ReadProbe(256 * 2 ** 20);
  const ceilings: Record<number, { fmaGflops: number; readGBps: number }> = {};
  const measureCeilings = () => {
    setThreads(Math.max(...threadCounts));
    for (const t of threadCounts) {
      const fma = measureFmaPeak(t, quick ? 0.1 : 0.3);
      const read = probe.measure(t, quick ? 1 : 3);
      ceilings[t] = { fmaGflops: Math.max(fma, ceilings[t]?.fmaGflops ?? 0), readGBps: Math.max(read, ceilings[t]?.readGBps ?? 0) };
    }
  };
  measureCeilings();
  log(
    `moe-kernels: isa ${info.isa}, ${os.cpus()[0]?.model ?? 'cpu'}, ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`,
  );
  if (torchReason) log(`PyTorch skipped: ${torchReason}`);
  if (ggmlReason) log(`ggml skipped: ${ggmlReason}`);

  const rows: Row[] = [];
  const notes: string[] = [];
  const extras: Record<string, unknown> = {};
  const steps = shapes.reduce((n, s) => n + s.tokens.length * threadCounts.length, 0);
  const progress = new Progress(steps);

  for (const shape of shapes) {
    const bytes = weightBytes(shape);
    // float32 weights in JS and packed (2x), the bfloat16, int8 (twice) and int4 layers (1.1x), activations and
    // slack; PyTorch's float32 and bfloat16 copies (1.6x).
    // ggml's f32, bf16, q8_0 and q4_0 processes: 1.9x. With --kquants our q4_k / q6_k layers (0.35x) and ggml's
    // two more processes (0.35x, and each its float32 input while it quantizes: 1x at most).
    const ours = bytes * (f.kquants ? 3.75 : 3.4);
    const ggmlBytes = ggmlReason ? 0 : bytes * (f.kquants ? 3.25 : 1.9);
    const needed = ours + (torchReason ? 0 : bytes * 1.6) + ggmlBytes;
    if (os.freemem() < ours) {
      notes.push(
        `${shape.name}: skipped, needs about ${(needed / 2 ** 30).toFixed(1)} GiB and ${(os.freemem() / 2 ** 30).toFixed(1)} GiB is free`,
      );
      for (let i = 0; i < shape.tokens.length * threadCounts.length; i++) progress.step(`${shape.name} skipped`);
      continue;
    }
    const useTorch = !torchReason && os.freemem() > needed - ggmlBytes;
    if (!torchReason && !useTorch) notes.push(`${shape.name}: PyTorch skipped for memory`);
    const useGgml = !ggmlReason && os.freemem() > needed;
    if (!ggmlReason && !useGgml) notes.push(`${shape.name}: ggml skipped for memory`);
    const config = { dModel: shape.dModel, dHidden: shape.dHidden, numExperts: shape.numExperts, topK: shape.topK };
    const weights = weightsFor(shape, 1);
    const rssBefore = process.memoryUsage().rss;
    const layer = new MoELayer(config, weights);
    layer.forwardSync(Tensor.randn([Math.max(...shape.tokens), shape.dModel], { seed: 3 })); // workspace at its largest
    // The weight-dtype axis: the same weights stored as bfloat16 (half the bytes to stream at decode), int8 and
    // int4 in groups of 32 (GGUF's Q8_0 / Q4_0 blocks), and int8 with one scale per row (vLLM's ExpertsInt8).
    const dtypeLayers = dtypeRows.map((d) => {
      const l = new MoELayer({ ...config, weightDtype: d.weightDtype, ...(d.groupSize ? { groupSize: d.groupSize } : {}) }, weights);
      l.forwardSync(Tensor.randn([Math.max(...shape.tokens), shape.dModel], { seed: 3 }));
      return l;
    });
    extras[`rss ${shape.name}`] = {
      growthMiB: (process.memoryUsage().rss - rssBefore) / 2 ** 20,
      packedWeightsMiB: layer.packedBytes / 2 ** 20,
      largestActivationsMiB:
        (Math.max(...shape.tokens) * (shape.topK * (2 * shape.dHidden + 2 * shape.dModel) + 3 * shape.dModel) * 4) / 2 ** 20,
    };
    const folder = tempFolder();
    // Over 1.5 GB the ORT model keeps its weights in external data files (a protobuf holds at most 2 GB); it
    // needs an interleaved copy of fc1 and its own copy of every weight.
    const external = bytes > 1.5 * 2 ** 30 ? folder : undefined;
    const ortPossible = Boolean(f.onnxruntime) && os.freemem() > 2.6 * bytes;
    if (f.onnxruntime && !ortPossible)
      notes.push(`${shape.name}: onnxruntime skipped: needs about ${((2.6 * bytes) / 2 ** 30).toFixed(1)} GiB more memory`);

    for (const threads of threadCounts) {
      setThreads(threads);
      const ort = ortPossible ? await createOrtMoE(config, weights, threads, false, external) : undefined;
      if (typeof ort === 'string') notes.push(`onnxruntime skipped: ${ort}`);
      const torch = useTorch ? await startTorch(config, weights, threads, folder) : undefined;
      const torchBf16 = useTorch ? await startTorch(config, weights, threads, folder, 'bfloat16') : undefined;
      const ggmls = useGgml ? await Promise.all(ggmlRows.map((g) => startGgml(config, weights, threads, folder, g.type))) : [];
      for (const tokens of shape.tokens) {
        progress.step(`${shape.name} T=${tokens} threads=${threads}`);
        const decode = tokens < 128;
        const { xs, hits } = decode
          ? decodeInputs(layer, tokens, shape.dModel, DECODE_INPUTS)
          : { xs: [Tensor.randn([tokens, shape.dModel], { seed: 100 + tokens })], hits: [] as number[] };
        const x = xs[0];
        const first = layer.forwardSync(x);
        if (!decode) hits.push(new Set(first.routing.experts).size);
        const loop = (forward: (x: Tensor<'float32'>) => unknown) => async (start: number, calls: number) => {
          let ms = 0;
          for (let c = 0; c < calls; c++) ms += await timed(() => forward(xs[(start + c) % xs.length]));
          return ms;
        };
        // `out`: the output written into one tensor allocated here, as a serving loop would (docs/api.md, `forward`): every plain
        // call returns a new output, fresh memory until the garbage collector hands earlier ones back.
        const out = Tensor.zeros([tokens, shape.dModel]);
        const impls: Impl[] = [
          { name: 'moe-kernels', run: loop((xj) => layer.forwardSync(xj)) },
          { name: 'moe-kernels async', run: loop((xj) => layer.forward(xj)) },
          { name: 'moe-kernels (out)', run: loop((xj) => layer.forwardSync(xj, { out })) },
          ...dtypeRows.map((d, i) => ({
            name: d.name,
            run: loop((xj) => dtypeLayers[i].forwardSync(xj, { out })),
            weightScale: dtypeLayers[i].packedBytes / layer.packedBytes,
          })),
        ];
        // Same weights, same input: the answers must agree before the times mean anything.
        if (ort && typeof ort !== 'string') {
          const diff = relDiff(await ort.run(x.data, tokens), first.output.data);
          if (diff > 1e-4) throw new Error(`onnxruntime disagrees at T=${tokens}: ${diff}`);
          impls.push({ name: 'onnxruntime', run: loop((xj) => ort.run(xj.data, tokens)) });
        }
        // A PyTorch process as a row: loads the inputs, runs the first once and returns how far its output is from ours.
        const peerRow = async (peer: PeerMoE, name: string, weightScale?: number, settleMs?: number) => {
          const outFile = path.join(folder, `out-${name.replace(/[^a-z0-9]+/g, '-')}.f32`);
          await peer.load(
            xs.map((t) => t.data),
            tokens,
          );
          await peer.run(0, 1, outFile);
          impls.push({
            name,
            run: async (start, calls) => (await peer.run(start, calls)).reduce((a, b) => a + b, 0),
            weightScale,
            settleMs,
          });
          return relDiff(new Float32Array(fs.readFileSync(outFile).buffer.slice(0)), first.output.data);
        };
        if (torch) {
          const diff = await peerRow(torch, 'pytorch (HF loop)');
          if (diff > 1e-4) throw new Error(`PyTorch disagrees at T=${tokens}: ${diff}`);
        }
        if (torchBf16) {
          // bf16 weights and activations (oneDNN's AVX512-BF16 matmuls where the CPU has them), every intermediate
          // rounded to bf16, the router too: it agrees with the float32 result to a bf16 model's precision only, and
          // a token whose top-k is a near tie may pick another expert, so the difference is reported, not asserted.
          extras[`pytorchBf16Difference ${shape.name} T=${tokens} threads=${threads}`] = await peerRow(
            torchBf16,
            'pytorch bf16 (HF loop)',
            0.5,
          );
        }
        // ggml in each weight type: float32 must agree with ours; the others quantize the weights (bf16 and the
        // Q8_0 / Q4_0 blocks, as our rows do) and the activations (ggml's Q8_0 activations for Q8_0 / Q4_0 weights,
        // bf16 for bf16), so their difference is reported, not asserted.
        for (const [i, peer] of ggmls.entries()) {
          const g = ggmlRows[i];
          const name = `ggml ${g.type}${(g.type === 'q4_0' || g.type === 'q4_k') && peer.hello.repacked ? ' (repacked)' : ''}`;
          const diff = await peerRow(peer, name, g.weightScale, GGML_SETTLE_MS);
          if (g.type === 'f32' && diff > 1e-4) throw new Error(`ggml disagrees at T=${tokens}: ${diff}`);
          if (g.type !== 'f32') extras[`ggmlDifference ${g.type} ${shape.name} T=${tokens} threads=${threads}`] = diff;
        }
        const naiveSeconds = layerFlops(config, tokens) / 0.7e9;
        if (threads === threadCounts[0] && naiveSeconds < 1.5) {
          const diff = relDiff(naiveMoE(x.data, tokens, weights, config), first.output.data);
          if (diff > 1e-4) throw new Error(`the naive TypeScript disagrees at T=${tokens}: ${diff}`);
          impls.push({ name: 'plain TypeScript', run: loop((xj) => naiveMoE(xj.data, tokens, weights, config)) });
        }
        const times = impls.map(() => [] as number[]);
        // Warm-up, then how many forwards make a block of BLOCK_MS, from a trial block: the first call alone (threads
        // waking, caches cold) overstated the rest, and made blocks of 6 calls lasting 8 ms.
        const blockOf = (ms: number) => Math.max(1, Math.min(MAX_BLOCK_CALLS, Math.ceil(BLOCK_MS / ms)));
        const calls: number[] = [];
        for (const impl of impls) {
          const first = blockOf(await impl.run(0, 1));
          calls.push(first > 1 ? blockOf((await impl.run(0, first)) / first) : 1);
        }
        const next = impls.map(() => 0); // each implementation's place in the cycle of inputs
        // Dispatch + combine as a share of the layer, from the last forward of each block of the plain call and of
        // the `out` call: a plain call's combine also pays the first touch of its fresh output (page faults of a few
        // ms at 512 tokens, NOTES.md row 53).
        const phases = [0, 2].map((impl) => ({ impl, dispatchCombine: 0, total: 0 }));
        // The order is shuffled every repetition (seeded): whoever runs right after PyTorch (another process,
        // whose run leaves our threads asleep and the caches cold) or right after an implementation that leaves
        // the machine warm is not always the same one. (A rotation would not do: it keeps every neighbour.)
        const order = new Random(tokens * 31 + threads);
        // The ceiling that applies, taken once per repetition in the same shuffled order as the implementations
        // (index impls.length): the share of each row is then against what the machine did in the same minutes.
        const ceilingSamples: number[] = [];
        const measureCeiling = () => (decode ? probe.measure(threads, 2) : measureFmaPeak(threads, quick ? 0.03 : 0.06));
        for (let r = 0; r < repeat; r++)
          for (const i of shuffled(impls.length + 1, order)) {
            if (i === impls.length) {
              ceilingSamples.push(measureCeiling());
              continue;
            }
            times[i].push((await impls[i].run(next[i], calls[i])) / calls[i]);
            if (impls[i].settleMs) await new Promise((resolve) => setTimeout(resolve, impls[i].settleMs));
            next[i] = (next[i] + calls[i]) % xs.length;
            const p = phases.find((q) => q.impl === i);
            if (p) {
              const tm = layer.lastTimings(); // of the block's last forward
              p.dispatchCombine += tm.dispatch + tm.combine;
              p.total += tm.total;
            }
          }
        if (tokens === 512 || (quick && tokens === 128))
          for (const p of phases)
            extras[`dispatchCombineShare ${shape.name} T=${tokens} threads=${threads} ${impls[p.impl].name}`] = p.dispatchCombine / p.total;
        const flops = layerFlops(config, tokens);
        const active = hits.reduce((sum, h) => sum + activeWeightBytes(config, h), 0) / hits.length;
        const ceiling = median(ceilingSamples);
        impls.forEach((impl, i) => {
          const ms = median(times[i]);
          rows.push({
            shape: shape.name,
            threads,
            tokens,
            implementation: impl.name,
            medianMs: ms,
            minMs: Math.min(...times[i]),
            maxMs: Math.max(...times[i]),
            callsPerRepetition: calls[i],
            gflops: flops / ms / 1e6,
            activeGBps: (active * (impl.weightScale ?? 1)) / ms / 1e6,
            ceiling,
            roofline: (decode ? active * (impl.weightScale ?? 1) : flops) / ms / 1e6 / ceiling,
          });
        });
      }
      torch?.close();
      torchBf16?.close();
      for (const g of ggmls) g.close();
    }
    layer.dispose();
    for (const l of dtypeLayers) l.dispose();
    fs.rmSync(folder, { recursive: true, force: true });
  }
  progress.end();

  // --- async overhead per call, against the sync form, on two small layers: one under the inline threshold
  // (its Promise settles at once) and one just over it (a round trip through the job thread). At these sizes the
  // work takes tens of microseconds at most, so the difference is the overhead itself; at decode sizes it drowns
  // in the noise.
  // Blocks of sync and async calls alternate, and the median of the per-block differences is reported: one
  // long block of each let the machine's drift between them decide the sign.
  const blocks = quick ? 2 : 10;
  const calls = 500;
  // Medians over the blocks, in microseconds per call: async minus sync, and sync alone.
  const overhead = async (sync: () => unknown, async_: () => Promise<unknown>) => {
    const overheads: number[] = [];
    const syncCalls: number[] = [];
    for (let b = 0; b < blocks; b++) {
      const syncMs = await timed(() => {
        for (let i = 0; i < calls; i++) sync();
      });
      const asyncMs = await timed(async () => {
        for (let i = 0; i < calls; i++) await async_();
      });
      overheads.push(((asyncMs - syncMs) / calls) * 1000);
      syncCalls.push((syncMs / calls) * 1000);
    }
    return { overhead: median(overheads), syncCall: median(syncCalls) };
  };
  for (const [label, cfg] of [
    ['tiny layer, settled inline', { dModel: 16, dHidden: 16, numExperts: 4, topK: 2 }],
    ['small layer, through the job thread', { dModel: 256, dHidden: 1024, numExperts: 4, topK: 2 }],
  ] as const) {
    const l = MoELayer.random(cfg, { seed: 1 });
    const lx = Tensor.randn([1, cfg.dModel], { seed: 2 });
    for (let i = 0; i < 200; i++) await l.forward(lx);
    const m = await overhead(
      () => l.forwardSync(lx),
      () => l.forward(lx),
    );
    extras[`asyncOverheadMicroseconds ${label}`] = m.overhead;
    extras[`syncCallMicroseconds ${label}`] = m.syncCall;
    l.dispose();
  }
  // Node's own round trip through its thread pool, by the same method: the floor any hand-off to a thread pays
  // on this machine (two wake-ups of sleeping threads).
  extras["asyncOverheadMicroseconds node fs.promises.access (node's own thread pool)"] = (
    await overhead(
      () => fs.accessSync(os.tmpdir()),
      () => fs.promises.access(os.tmpdir()),
    )
  ).overhead;

  measureCeilings();
  probe.dispose();

  // --- report ----------------------------------------------------------------------------------------------
  for (const t of threadCounts)
    log(
      `ceilings, ${t} thread${t > 1 ? 's' : ''}: fp32 FMA ${ceilings[t].fmaGflops.toFixed(1)} GFLOP/s, memory read ${ceilings[t].readGBps.toFixed(1)} GB/s (best of before and after; each row's share is of the ceiling measured between its scenario's repetitions)`,
    );
  const base = (r: Row) =>
    rows.find((o) => o.shape === r.shape && o.threads === r.threads && o.tokens === r.tokens && o.implementation === 'onnxruntime');
  log(
    '\n| shape | threads | tokens | implementation | median ms | min-max ms | GFLOP/s | GB/s active | ceiling | % of ceiling | vs onnxruntime | vs ggml, same bytes |',
  );
  log('|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  const sameBytes = (r: Row) =>
    rows.find(
      (o) =>
        o.shape === r.shape &&
        o.threads === r.threads &&
        o.tokens === r.tokens &&
        SAME_DTYPE[r.implementation] !== undefined &&
        o.implementation.startsWith(SAME_DTYPE[r.implementation]),
    );
  for (const r of rows) {
    const o = base(r);
    const g = sameBytes(r);
    log(
      `| ${r.shape} | ${r.threads} | ${r.tokens} | ${r.implementation} | ${r.medianMs.toFixed(r.medianMs < 10 ? 3 : 1)} | ` +
        `${r.minMs.toFixed(2)}-${r.maxMs.toFixed(2)} | ${r.gflops.toFixed(1)} | ${r.activeGBps.toFixed(1)} | ` +
        `${r.ceiling.toFixed(0)} ${r.tokens < 128 ? 'GB/s' : 'GFLOP/s'} | ${(100 * r.roofline).toFixed(0)}% ${r.tokens < 128 ? 'BW' : 'FMA'} | ` +
        `${o ? (o.medianMs / r.medianMs).toFixed(2) + 'x' : '-'} | ${g ? (g.medianMs / r.medianMs).toFixed(2) + 'x' : '-'} |`,
    );
  }
  log('');
  for (const [k, v] of Object.entries(extras))
    log(`${k}: ${typeof v === 'number' ? v.toFixed(3) : JSON.stringify(v, (_, x) => (typeof x === 'number' ? Number(x.toFixed(2)) : x))}`);
  for (const n of notes) log(`note: ${n}`);

  const outDir = path.resolve(String(f.out));
  const result: BenchResult = {
    date: new Date().toISOString(),
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
    isa: info.isa,
    node: process.version,
    ceilings,
    rows,
    extras,
    notes,
  };
  const folder = saveResult(result, outDir, machineKind(info.isa));
  log(
    `\nwrote ${path.relative(process.cwd(), folder)}/summary.csv (committed), latest.json and chart-*.svg; appended ${path.relative(process.cwd(), outDir)}/history.csv`,
  );
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
