/**
 * The public API under generated input (test/fuzz/): seeded cases of valid and adversarial arguments (odd
 * numbers, BigInt, Symbols, Proxies, throwing getters, views at odd offsets, SharedArrayBuffer, resizable and
 * detached buffers, faked typed arrays, plain objects), each batch in a child process. A case fails on a crash,
 * a hang, a modified input, a non-finite result, or a refusal outside the one error format.
 */

const { runFuzz } = require('./fuzz/fuzz.js') as {
  runFuzz(o: { seed: number; cases: number }): { ran: number; refused: number; failures: { index: number; name: string; why: string }[] };
};

describe('fuzz', () => {
  it('3,000 generated calls of the public API: no crash, hang, modified input or refusal outside the format', () => {
    const seed = Number(process.env.MOE_FUZZ_SEED ?? 1);
    const { ran, refused, failures } = runFuzz({ seed, cases: Number(process.env.MOE_FUZZ_CASES ?? 3000) });
    expect(failures).toEqual([]);
    expect(ran).toBeGreaterThanOrEqual(3000);
    expect(refused).toBeGreaterThan(ran / 5); // the generator does reach the checks
  });
});
