/**
 * The memory one request may ask for: a call whose estimate passes it is refused with a RangeError in milliseconds,
 * instead of allocating until the machine swaps or the kernel kills the process (issue 34: requests inside the
 * shape limits that asked for 12-48 GiB). The default is half this machine's memory; `setMemoryLimit(bytes)` or the
 * environment's MOE_KERNELS_MEMORY_LIMIT (bytes) raises or lowers it, Infinity turns it off.
 */
import * as os from 'os';
import { describe, rangeError, typeError } from './errors';
import { WeightDtype, packedBytesPerWeight } from './weight-dtypes';
import { isGated, type Activation } from './activation';

let chosen: number | undefined;

/** The limit in bytes now in force. */
export function memoryLimit(): number {
  if (chosen !== undefined) return chosen;
  const env = process.env.MOE_KERNELS_MEMORY_LIMIT;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!(n > 0)) throw rangeError('MOE_KERNELS_MEMORY_LIMIT to be a number of bytes > 0 (or Infinity)', JSON.stringify(env));
    return n;
  }
  return Math.floor(os.totalmem() / 2);
}

/** Sets the limit (bytes > 0, Infinity for none); undefined goes back to the default. */
export function setMemoryLimit(bytes: number | undefined): void {
  if (bytes === undefined) {
    chosen = undefined;
    return;
  }
  if (typeof bytes !== 'number') throw typeError('bytes to be a number (or undefined for the default)', describe(bytes));
  if (!(bytes > 0)) throw rangeError('bytes to be > 0 (Infinity for no limit)', describe(bytes));
  chosen = bytes;
}

/** A RangeError when `bytes` (an estimate of what `what` will allocate) passes the limit. */
export function checkMemory(bytes: number, what: string): void {
  const limit = memoryLimit();
  if (bytes <= limit) return;
  const whose = chosen === undefined && !process.env.MOE_KERNELS_MEMORY_LIMIT ? `half of this machine's ${gib(os.totalmem())}` : 'as set';
  throw rangeError(
    `${what} to need at most ${gib(limit)} (the memory limit: ${whose}; raise it with setMemoryLimit(bytes) or MOE_KERNELS_MEMORY_LIMIT)`,
    `an estimate of ${gib(bytes)}`,
  );
}

function gib(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)} GiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** The elements of a layer's weights: router and routed experts, shared experts (with their gate). */
export function layerElements(c: {
  dModel: number;
  dHidden: number;
  numExperts: number;
  activation: Activation;
  sharedExperts: number;
  sharedHidden: number;
}): number {
  const per = (hidden: number) => (isGated(c.activation) ? 3 : 2) * hidden * c.dModel + 2 * hidden + c.dModel;
  return c.numExperts * c.dModel + c.numExperts * per(c.dHidden) + c.sharedExperts * (per(c.sharedHidden) + c.dModel);
}

/** The bytes of a layer's packed weights in `dtype`. */
export function packedBytes(elements: number, dtype: WeightDtype): number {
  return elements * packedBytesPerWeight(dtype);
}
