/** The package as users load it: require() and import of the built dist/, by the package name. */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

const root = path.resolve(__dirname, '..');

describe('package entry points', () => {
  beforeAll(() => {
    if (!fs.existsSync(path.join(root, 'dist', 'index.mjs')))
      throw new Error('dist/ is missing: run `npm run build:ts` (npm install does it)');
  });

  const script = `
    const layer = MoELayer.random({ dModel: 8, dHidden: 12, numExperts: 4, topK: 2 }, { seed: 1 });
    const { output, routing } = layer.forwardSync(Tensor.randn([3, 8], { seed: 2 }));
    console.log(JSON.stringify({ shape: output.shape, slots: routing.experts.length, isa: backendInfo().isa }));
  `;

  it("require('moe-kernels') works", () => {
    const out = execFileSync(process.execPath, ['-e', `const { MoELayer, Tensor, backendInfo } = require('moe-kernels');${script}`], {
      cwd: root,
      encoding: 'utf8',
    });
    expect(JSON.parse(out)).toMatchObject({ shape: [3, 8], slots: 6 });
  });

  it("import { ... } from 'moe-kernels' works", () => {
    const out = execFileSync(
      process.execPath,
      ['--input-type=module', '-e', `import { MoELayer, Tensor, backendInfo } from 'moe-kernels';${script}`],
      { cwd: root, encoding: 'utf8' },
    );
    expect(JSON.parse(out)).toMatchObject({ shape: [3, 8], slots: 6 });
  });

  it('ships type declarations for both', () => {
    expect(fs.existsSync(path.join(root, 'dist', 'lib', 'index.d.ts'))).toBe(true);
    expect(fs.existsSync(path.join(root, 'dist', 'index.d.mts'))).toBe(true);
  });
});
