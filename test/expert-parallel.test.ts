// Expert parallelism (issue 20) as the default, MPI-free build sees it; the collective checks at 2 and 4 ranks run
// under mpirun in scripts/test-mpi.sh (tools/mpi/expert-parallel-check.ts).
import { MoELayer, backendInfo } from '../lib';
import { expectError } from './helpers';

const mpi = backendInfo().mpi;

describe('expert parallelism in a build without MPI', () => {
  (mpi.compiled ? it.skip : it)('backendInfo().mpi says it is not compiled, and why', () => {
    expect(mpi).toEqual({ compiled: false, initialized: false, rank: 0, size: 1, reason: expect.stringMatching(/build:mpi/) });
  });

  (mpi.compiled ? it.skip : it)('an expert-parallel layer is refused with the way to get one', () => {
    expectError(() => MoELayer.random({ dModel: 8, dHidden: 8, numExperts: 4, topK: 2, expertParallel: true }), 'RangeError', /MPI/);
  });
});

describe('config.expertParallel', () => {
  it.each([
    [[1, 2], 'RangeError', /add up to numExperts \(4\)/],
    [[1, -1, 4], 'RangeError', /expertParallel\[1\]/],
    [[1.5, 2.5], 'RangeError', /expertParallel\[0\]/],
    ['yes', 'TypeError', /boolean or an array/],
  ])('refuses %p', (value, type, message) => {
    expectError(
      () => MoELayer.random({ dModel: 8, dHidden: 8, numExperts: 4, topK: 2, expertParallel: value as never }),
      type as 'TypeError' | 'RangeError',
      message,
    );
  });
});
