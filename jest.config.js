/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }] },
  testTimeout: 120000,
  // One worker per core, not Jest's default of one fewer: on CI's two cores that default ran the suites one at a
  // time (141 s), while much of their time is spent in child processes and the job thread (114 s with two).
  maxWorkers: '100%',
};
