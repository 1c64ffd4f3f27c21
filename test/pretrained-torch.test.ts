/**
 * The fixtures of every family against PyTorch implementations of the same blocks (scripts/crosscheck-pretrained.py),
 * where /usr/bin/python3 has torch (Debian's python3-torch); skipped with a message otherwise.
 */
import { spawnSync } from 'child_process';
import { existsSync, promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MoELayer, Tensor } from '../lib';
import { D, FIXTURES } from './pretrained/fixtures';

const python = '/usr/bin/python3';
const hasTorch = existsSync(python) && spawnSync(python, ['-c', 'import torch, numpy'], { encoding: 'utf8' }).status === 0;

(hasTorch ? test : test.skip)(
  'every family agrees with its PyTorch block (float32 weights)',
  async () => {
    const root = await fs.mkdtemp(path.join(os.tmpdir(), 'moe-torch-'));
    try {
      let seed = 40;
      for (const [name, f] of Object.entries(FIXTURES)) {
        const dir = path.join(root, name);
        await f.make(dir, seed++);
        const tokens = 19;
        const x = Tensor.randn([tokens, D], { seed: seed * 7 });
        const layer = await MoELayer.fromPretrained(dir, { layer: f.layer, weightDtype: 'float32' });
        const y = layer.forwardSync(x).output;
        layer.dispose();
        await fs.writeFile(path.join(dir, 'x.f32'), Buffer.from((x.data as Float32Array).buffer));
        await fs.writeFile(path.join(dir, 'y.f32'), Buffer.from(y.data.buffer));
        await fs.writeFile(path.join(dir, 'crosscheck.json'), JSON.stringify({ layer: f.layer, tokens }));
      }
      const r = spawnSync(python, [path.join(__dirname, '..', 'scripts', 'crosscheck-pretrained.py'), root], {
        encoding: 'utf8',
        timeout: 300_000,
      });
      if (r.status !== 0) throw new Error(`crosscheck-pretrained.py exited ${r.status}\n${r.stdout}\n${r.stderr}`);
      expect(r.stdout.split('\n').filter((l) => l.startsWith('ok')).length).toBe(Object.keys(FIXTURES).length);
    } finally {
      await fs.rm(root, { recursive: true, force: true });
    }
  },
  300_000,
);

if (!hasTorch) test('PyTorch cross-check', () => console.log(`skipped: ${python} has no torch (apt-get install python3-torch)`));
