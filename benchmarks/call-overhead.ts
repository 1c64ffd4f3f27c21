/**
 * What a call costs beyond its work: forwards of a tiny layer (dModel 16, 4 experts), with the backend's fused
 * routing (sync and async) and with a rule the core routes in float64 ('switch'; before issue 29 it routed in
 * TypeScript, two calls into the core), in microseconds per call.
 *   node dist/benchmarks/call-overhead.js [--calls 100000]
 * To compare two versions, build each checkout and run this in both, alternating (benchmarks/NOTES.md row 91).
 */
import { MoELayer, Tensor, setThreads } from '../lib';
import { parseFlags } from '../tools/flags';

const f = parseFlags(process.argv.slice(2), [{ name: 'calls', help: 'calls per measurement', default: 100000 }]);
const calls = Number(f.calls);

function perCall(fn: () => unknown): number {
  for (let i = 0; i < calls / 10; i++) fn();
  const t = process.hrtime.bigint();
  for (let i = 0; i < calls; i++) fn();
  return Number(process.hrtime.bigint() - t) / 1e3 / calls;
}

async function perCallAsync(fn: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < calls / 10; i++) await fn();
  const t = process.hrtime.bigint();
  for (let i = 0; i < calls; i++) await fn();
  return Number(process.hrtime.bigint() - t) / 1e3 / calls;
}

async function main(): Promise<void> {
  setThreads(2);
  const shape = { dModel: 16, dHidden: 16, numExperts: 4 };
  using own = MoELayer.random({ ...shape, topK: 2 }, { seed: 1 });
  using routed = MoELayer.random({ ...shape, router: { kind: 'switch' } }, { seed: 1 });
  const x = Tensor.randn([1, 16], { seed: 2 });
  const rows = {
    'forwardSync, fused routing': perCall(() => own.forwardSync(x)),
    'forward (async), fused routing': await perCallAsync(() => own.forward(x)),
    "forwardSync, 'switch' by the core's rule": perCall(() => routed.forwardSync(x)),
    "forward (async), 'switch' by the core's rule": await perCallAsync(() => routed.forward(x)),
  };
  for (const [what, us] of Object.entries(rows)) console.log(`${us.toFixed(2).padStart(7)} us  ${what}`);
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
