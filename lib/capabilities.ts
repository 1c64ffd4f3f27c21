/**
 * What each backend offers: the core's tables (native/include/moe/capabilities.h, one per backend), read from the
 * addon once. Every TypeScript check of "not on this backend" goes through requireFeature, which formats the same
 * message the core's refusals carry, so a refusal reads the same whichever side makes it.
 */
import { rangeError } from './errors';
import { native } from './native';

/** A feature a backend may offer (the core's moe::Feature, by its name at the seam). */
export type Feature =
  | 'routeSoftmaxTopK'
  | 'routeSigmoidBias'
  | 'sharedExperts'
  | 'sharedGate'
  | 'expertParallel'
  | 'backward'
  | 'optimizerStep'
  | 'exportWeights'
  | 'slotOutputs'
  | 'timings'
  | 'routerBiasUpdate'
  | 'expertCache';

export type BackendName = 'cpu' | 'cuda';

/** One backend's table: the features it offers, and how it holds and computes each weight dtype, in words. */
export interface BackendCapabilities {
  offers: readonly Feature[];
  weights: string;
}

/** Every backend's table (whether or not that backend is built here), and each feature's description. */
export interface Capabilities {
  backends: Readonly<Record<BackendName, BackendCapabilities>>;
  features: Readonly<Record<Feature, string>>;
}

let tables: Capabilities | undefined;

/** The core's tables (constant: read once, from coreTables(), which asks no device anything). */
export function capabilities(): Capabilities {
  if (!tables) {
    const { backends, features } = native().coreTables();
    tables = Object.freeze({ backends, features });
  }
  return tables;
}

/** Whether `backend` offers `feature`. */
export function offers(caps: Capabilities, backend: BackendName, feature: Feature): boolean {
  return caps.backends[backend].offers.includes(feature);
}

/** A RangeError in the core's words unless `backend` offers `feature`. */
export function requireFeature(caps: Capabilities, backend: BackendName, feature: Feature): void {
  if (offers(caps, backend, feature)) return;
  throw rangeError(
    `a backend that offers ${caps.features[feature]}`,
    `backend '${backend}' (it offers: ${caps.backends[backend].offers.join(', ')})`,
  );
}
