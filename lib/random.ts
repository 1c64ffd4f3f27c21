/**
 * A seeded, reproducible random source: xoshiro128** seeded through splitmix32, normals by Marsaglia's
 * polar method.
 * The same seed gives the same numbers on every platform and Node version.
 */
export class Random {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spare: number | undefined;

  /** seed: an integer in [0, 2^32 - 1], checked by the public functions that take one (tensor.ts expectSeed). */
  constructor(seed: number) {
    let x = seed >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next() | 0;
    this.s1 = next() | 0;
    this.s2 = next() | 0;
    this.s3 = next() | 0;
  }

  /** A uniform 32-bit unsigned integer. The state is kept as int32 (small integers for V8, no boxing). */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9);
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result >>> 0;
  }

  /** Uniform in [0, 1), 53 bits. */
  uniform(): number {
    const hi = this.nextUint32() >>> 5;
    const lo = this.nextUint32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Fills `out` with mean + std * normal(), the same sequence as calling normal() in turn. */
  fillNormal(out: { length: number; [index: number]: number }, mean: number, std: number): void {
    for (let i = 0; i < out.length; i++) out[i] = mean + std * this.normal();
  }

  /** Standard normal (polar method on 32-bit uniforms: plenty for weights and test data). */
  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    for (;;) {
      const u = this.nextUint32() * 4.656612873077393e-10 - 1; // [-1, 1)
      const v = this.nextUint32() * 4.656612873077393e-10 - 1;
      const q = u * u + v * v;
      if (q === 0 || q >= 1) continue;
      const f = Math.sqrt((-2 * Math.log(q)) / q);
      this.spare = v * f;
      return u * f;
    }
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
