/**
 * Every ISA path this CPU supports must agree with the reference. The ISA is chosen once when the addon
 * loads, so each one runs the layer suite in its own process with MOE_FORCE_ISA.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import { backendInfo } from '../lib';

const root = path.resolve(__dirname, '..');
const addon = process.env.MOE_KERNELS_BINARY ?? path.join(root, 'build', 'Release', 'moe_kernels.node');

function run(args: string[], isa: string) {
  return spawnSync(process.execPath, args, {
    cwd: root,
    env: { ...process.env, MOE_FORCE_ISA: isa },
    encoding: 'utf8',
    timeout: 600_000,
  });
}

describe('ISA paths', () => {
  const isas = backendInfo().supportedIsas;

  it('lists the active ISA first among the supported ones and includes scalar', () => {
    expect(isas).toContain('scalar');
    expect(isas).toContain(backendInfo().isa);
  });

  it('MOE_FORCE_ISA selects each supported ISA', () => {
    for (const isa of isas) {
      const r = run(['-e', `process.stdout.write(require(${JSON.stringify(addon)}).backendInfo().isa)`], isa);
      expect(r.stdout).toBe(isa);
    }
  });

  for (const isa of isas) {
    if (isa === backendInfo().isa) continue; // the main run covers the active one
    it(`the ${isa} path passes the layer, weight-dtype, export and backward suites`, () => {
      const jest = require.resolve('jest/bin/jest');
      // --verbose: with two files Jest names only the files, and the describe titles carry the ISA they ran on.
      const suites = ['test/layer.test.ts', 'test/weight-dtypes.test.ts', 'test/export-weights.test.ts', 'test/layer-backward.test.ts'];
      const r = run([jest, '--ci', '--runInBand', '--verbose', ...suites], isa);
      const summary = (r.stderr.match(/Tests:.*/) ?? ['(no summary)'])[0];
      if (r.status !== 0) throw new Error(`isa ${isa}: ${summary}\n${r.stderr.slice(-4000)}`);
      expect(r.stderr).toContain(`isa ${isa}`);
      expect(summary).toMatch(/passed/);
    });
  }
});
