/**
 * The cost of expert parallelism's exchange (issue 20), run on every rank of an MPI job:
 *   mpirun -np 2 node dist/benchmarks/expert-parallel.js [--shape small] [--decode 1] [--prefill 512]
 *   (scripts/bench-mpi.sh builds the MPI addon and runs it at 2 and 4 ranks)
 * Per rank and forward: the time inside the all-to-all exchanges against the rest of the experts' part (the local
 * grouped FFN), the bytes sent and received, for a decode step and a prefill with the same tokens on every rank; and,
 * in the same run, the single-process layer on one rank's tokens. Each rank writes its medians to <out>/rank<r>.json;
 * after one more collective forward (every rank has written by then) rank 0 prints the table, writes
 * benchmarks/results/<machine>/expert-parallel-<shape>-<ranks>.json, and applies a network model to the measured compute
 * (docs/expert-parallel.md).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MoELayer, Tensor, backendInfo } from '../lib';
import { FlagSpec, median, parseFlags, usage } from '../tools/flags';
import { machineKind } from './history';
import { SHAPES } from './shapes';

const FLAGS: FlagSpec[] = [
  { name: 'shape', help: SHAPES.map((s) => s.name).join(' | '), default: 'small' },
  { name: 'decode', help: 'tokens per rank of the decode step', default: 1 },
  { name: 'prefill', help: 'tokens per rank of the prefill', default: 512 },
  { name: 'repeat', help: 'timed prefill forwards (decode: 10x as many)', default: 7 },
  { name: 'out', help: 'folder for the ranks’ files (default: a new temporary one)', default: '' },
  { name: 'help', help: 'show this help', default: false },
];

/** Medians of one phase over the timed forwards of one rank. */
interface Phase {
  tokens: number;
  forward: number; // ms, the whole expert-parallel forward
  exchange: number; // ms inside the all-to-alls
  compute: number; // ms of the experts' part outside them (the local grouped FFN, gathers and scatters)
  bytesSent: number;
  bytesReceived: number;
  single: number; // ms, the single-process layer (every expert here) on the same tokens
}

/** A network: bandwidth per direction and the latency of one message. */
interface Network {
  name: string;
  gbPerS: number;
  latencyUs: number;
}
const NETWORKS: Network[] = [
  { name: '25 GbE (TCP)', gbPerS: 3.1, latencyUs: 25 },
  { name: '200 Gb/s InfiniBand', gbPerS: 24, latencyUs: 2 },
];

/**
 * The model: an exchange is three all-to-alls (counts, token rows out, outputs back); each costs (ranks - 1) message
 * latencies (pairwise, one after another in the worst case), and the two data ones move a rank's remote slots, tokens
 * x topK x dModel x 4 bytes x (ranks - 1) / ranks, each way at the link's bandwidth (full duplex). The compute is the
 * measured single-process forward of one rank's tokens (perfect balance: each of N machines computes 1/N of the
 * experts for N times the tokens). A batch of T tokens split over N machines is taken to cost compute(T) / N plus the
 * exchange: exact for compute-bound prefill, optimistic for decode (whose weight streaming does not shrink as fast).
 */
function exchangeMs(net: Network, ranks: number, tokensPerRank: number, topK: number, dModel: number): number {
  if (ranks === 1) return 0;
  const bytes = (tokensPerRank * topK * dModel * 4 * (ranks - 1)) / ranks;
  return (3 * (ranks - 1) * net.latencyUs) / 1000 + (2 * bytes) / (net.gbPerS * 1e6);
}

/** The expected share of E experts that T x k slots hit (uniform routing): 1 - (1 - 1/E)^(Tk). */
function hitShare(slots: number, experts: number): number {
  return 1 - Math.pow(1 - 1 / experts, slots);
}

/**
 * One batch of `batch` tokens split over N machines (N <= E): each gets batch / N tokens and E / N experts. Prefill is
 * compute-bound: compute(batch) / N. Decode streams the weights of the experts its slots hit: each machine streams
 * those of its E / N that the whole batch hits, at the measured time per hit expert (singleMs over the experts one
 * machine's `tokens` hit).
 */
function splitMs(
  net: Network,
  n: number,
  batch: number,
  tokens: number,
  singleMs: number,
  decode: boolean,
  s: { topK: number; numExperts: number; dModel: number },
): number {
  const perBatchCompute = (singleMs * batch) / tokens; // prefill: compute grows with the tokens
  const perExpert = singleMs / (s.numExperts * hitShare(tokens * s.topK, s.numExperts));
  const compute = decode ? perExpert * (s.numExperts / n) * hitShare(batch * s.topK, s.numExperts) : perBatchCompute / n;
  return compute + exchangeMs(net, n, batch / n, s.topK, s.dModel);
}

async function main(): Promise<void> {
  const f = parseFlags(process.argv.slice(2), FLAGS);
  if (f.help) {
    process.stdout.write(usage('mpirun -np N node dist/benchmarks/expert-parallel.js [flags]', FLAGS));
    return;
  }
  const shape = SHAPES.find((s) => s.name === String(f.shape));
  if (!shape) throw new Error(`unknown --shape ${f.shape}`);
  const { dModel, dHidden, numExperts, topK } = shape;
  // The ranks share this machine's cores: each gets its share of the threads.
  const probe = MoELayer.random({ dModel: 8, dHidden: 8, numExperts: 2, topK: 1, expertParallel: true }, { seed: 1 });
  probe.dispose();
  const { rank, size } = backendInfo().mpi;
  const threads = Math.max(1, Math.floor(os.availableParallelism() / size));
  const config = { dModel, dHidden, numExperts, topK, threads };
  const ep = MoELayer.random({ ...config, expertParallel: true }, { seed: 1 });
  const single = MoELayer.random(config, { seed: 1 });
  const reps = Number(f.repeat);

  // The expert-parallel forwards first, then the single-process ones: interleaved, one rank's single-process forward
  // would be counted as the other ranks' exchange (they wait for it inside the all-to-all).
  const measure = (tokens: number, count: number): Phase => {
    const x = Tensor.randn([tokens, dModel], { seed: 10 + rank });
    const runs = { forward: [] as number[], exchange: [] as number[], compute: [] as number[], single: [] as number[] };
    let sent = 0;
    let received = 0;
    for (let i = 0; i <= count; i++) {
      const t0 = performance.now();
      ep.forwardSync(x);
      const t1 = performance.now();
      const t = ep.lastTimings();
      if (i === 0) continue; // warm-up
      runs.forward.push(t1 - t0);
      runs.exchange.push(t.exchange);
      runs.compute.push(t.experts - t.exchange);
      sent = t.exchangeBytesSent;
      received = t.exchangeBytesReceived;
    }
    for (let i = 0; i <= count; i++) {
      const t0 = performance.now();
      single.forwardSync(x);
      if (i > 0) runs.single.push(performance.now() - t0);
    }
    return {
      tokens,
      forward: median(runs.forward),
      exchange: median(runs.exchange),
      compute: median(runs.compute),
      bytesSent: sent,
      bytesReceived: received,
      single: median(runs.single),
    };
  };
  const phases = { decode: measure(Number(f.decode), 10 * reps), prefill: measure(Number(f.prefill), reps) };

  const out = String(f.out) || path.join(os.tmpdir(), `moe-ep-bench-${process.env.OMPI_COMM_WORLD_JOBID ?? process.ppid}`);
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, `rank${rank}.json`), JSON.stringify(phases));
  ep.forwardSync(Tensor.randn([1, dModel], { seed: 1 })); // every rank has written its file once this returns
  ep.dispose();
  single.dispose();
  if (rank !== 0) return;

  const all = Array.from({ length: size }, (_, r) => JSON.parse(fs.readFileSync(path.join(out, `rank${r}.json`), 'utf8')) as typeof phases);
  const title = `${shape.name} (${dModel}/${dHidden}/${numExperts}, top-${topK}), ${size} ranks on this machine, ${threads} thread(s) each`;
  console.log(title);
  const lines: string[] = [];
  const summary: Record<string, unknown> = {};
  for (const name of ['decode', 'prefill'] as const) {
    const ranks = all.map((p) => p[name]);
    const worst = (key: keyof Phase) => Math.max(...ranks.map((p) => p[key]));
    // Time inside the all-to-alls includes waiting for the slowest rank's compute (uneven routing); what the
    // exchange itself adds is the forward beyond the slowest rank's time outside the all-to-alls.
    const outside = Math.max(...ranks.map((p) => p.forward - p.exchange));
    const added = Math.max(0, worst('forward') - outside);
    const share = added / worst('forward');
    const perTokenBytes = ranks[0].bytesSent / ranks[0].tokens;
    lines.push(
      `${name.padEnd(7)} ${String(ranks[0].tokens).padStart(4)} tokens/rank: forward ${worst('forward').toFixed(2)} ms; ` +
        `the exchange adds ${added.toFixed(2)} ms (${(100 * share).toFixed(0)}% of the forward; up to ${worst('exchange').toFixed(2)} ms inside ` +
        `the all-to-alls with the waits for the slowest rank), local FFN up to ${worst('compute').toFixed(2)} ms; ` +
        `sent ${(ranks[0].bytesSent / 1024).toFixed(1)} KiB (${perTokenBytes.toFixed(0)} B/token, rows out and outputs back); ` +
        `single process on one rank's tokens ${worst('single').toFixed(2)} ms`,
    );
    const compute = ranks[0].single; // measured: one machine's forward of one rank's tokens
    const model: Record<string, unknown> = {};
    for (const net of NETWORKS) {
      // Each of 8 machines with this many tokens (more requests served), and one batch of 8 machines' tokens split
      // over N of them (N up to E: a machine with no expert has nothing to compute).
      const exchange8 = exchangeMs(net, 8, ranks[0].tokens, topK, dModel);
      const batch = ranks[0].tokens * 8;
      const counts = [1, 2, 4, 8, 16, 32, 64].filter((n) => n <= numExperts);
      const split = counts.map((n) => ({ machines: n, ms: splitMs(net, n, batch, ranks[0].tokens, compute, name === 'decode', shape) }));
      const best = split.reduce((a, b) => (b.ms < a.ms ? b : a));
      model[net.name] = { exchangeMsAt8: exchange8, batch, split, fastestOn: best.machines };
      lines.push(
        `        model, 8 machines on ${net.name}: exchange ${exchange8.toFixed(3)} ms per forward against ${compute.toFixed(2)} ms of compute ` +
          `(${((100 * exchange8) / (exchange8 + compute)).toFixed(0)}% of the forward); one batch of ${batch} tokens: ` +
          split.map((p) => `${p.machines}: ${p.ms.toFixed(2)} ms`).join(', '),
      );
    }
    summary[name] = { ranks, exchangeAddedMs: added, exchangeShare: share, model };
  }
  lines.forEach((l) => console.log(l));
  const dir = path.join(__dirname, '..', '..', 'benchmarks', 'results', machineKind(backendInfo().isa));
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `expert-parallel-${shape.name}-${size}.json`);
  fs.writeFileSync(
    file,
    JSON.stringify({ title, date: new Date().toISOString(), shape, ranks: size, threads, ...summary }, null, 2) + '\n',
  );
  console.log(`results: ${path.relative(process.cwd(), file)}`);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
