/**
 * The async forms run on the library's job thread and settle through one thread-safe function per env. These
 * run in child processes, where the event loop's lifetime and worker-thread teardown can be observed.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

const root = path.resolve(__dirname, '..');

function node(script: string): string {
  return execFileSync(process.execPath, ['-e', `const { MoELayer, Tensor } = require('moe-kernels');${script}`], {
    cwd: root,
    encoding: 'utf8',
    timeout: 60_000,
  });
}

const layer = `const layer = MoELayer.random({ dModel: 64, dHidden: 96, numExperts: 8, topK: 2 }, { seed: 1 });
  const x = Tensor.randn([40, 64], { seed: 2 });`; // 40 tokens: over the size settled inline

describe('async calls', () => {
  beforeAll(() => {
    if (!fs.existsSync(path.join(root, 'dist', 'lib', 'index.js')))
      throw new Error('dist/ is missing: run `npm run build:ts` (npm install does it)');
  });

  it('keep the process alive until they settle, then let it exit', () => {
    const out = node(`${layer}
      const want = layer.forwardSync(x).output.data;
      layer.forward(x).then(({ output }) => console.log(output.data.every((v, i) => v === want[i]) ? 'same' : 'differs'));`);
    expect(out.trim()).toBe('same');
  });

  it('run in worker threads, and a worker ended with calls in flight harms nothing', () => {
    const out = node(`${layer}
      const { Worker } = require('worker_threads');
      const body = \`const { MoELayer, Tensor } = require('moe-kernels');
        const { parentPort, workerData } = require('worker_threads');
        ${layer.replace(/`/g, '\\`')}
        const big = Tensor.randn([4000, 64], { seed: 3 }); // ~10 ms of work still running when the worker ends
        const calls = Array.from({ length: 8 }, () => layer.forward(workerData.wait ? x : big));
        if (workerData.wait) Promise.all(calls).then((r) => parentPort.postMessage(Array.from(r[7].output.data)));
        else parentPort.postMessage('started');\`;
      const want = Array.from(layer.forwardSync(x).output.data);
      const run = (wait) => new Promise((resolve, reject) => {
        const w = new Worker(body, { eval: true, workerData: { wait } });
        w.once('error', reject);
        w.once('message', async (m) => { if (!wait) await w.terminate(); resolve(m); });
      });
      (async () => {
        const done = await run(true);
        console.log(done.every((v, i) => v === want[i]) ? 'worker same' : 'worker differs');
        for (let i = 0; i < 5; i++) await run(false);
        const { output } = await layer.forward(x);
        console.log(output.data.every((v, i) => v === want[i]) ? 'main same' : 'main differs');
      })();`);
    expect(out.trim().split('\n')).toEqual(['worker same', 'main same']);
  });

  it('workers terminated at random moments while forwards settle, 40 times: the process survives', () => {
    // Each worker keeps 8 forwards in flight; terminate() lands while the job thread finishes some of them and
    // their Promises settle into an env being torn down (once: "terminate called after throwing Napi::Error").
    const out = node(`
      const { Worker } = require('worker_threads');
      const body = \`const { MoELayer, Tensor } = require('moe-kernels');
        const { parentPort } = require('worker_threads');
        ${layer.replace(/`/g, '\\`')}
        parentPort.postMessage('ready');
        (async () => { for (;;) await Promise.all(Array.from({ length: 8 }, () => layer.forward(x))); })();\`;
      let rounds = 0;
      const next = () => {
        if (rounds++ === 40) return console.log('survived');
        const w = new Worker(body, { eval: true });
        w.once('error', (e) => console.log('worker error: ' + e.message));
        w.once('message', () => setTimeout(() => w.terminate().then(next), Math.random() * 20));
      };
      next();`);
    expect(out.trim()).toBe('survived');
  });
});
