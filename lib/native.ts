/**
 * The one typed seam around the compiled binding. It is loaded on first use (native-loader.ts); when it cannot
 * be, the error lists every place tried, why each failed, and what to run.
 */
import type { Feature } from './capabilities';
import * as fs from 'fs';
import * as path from 'path';
import { loadNativeBinding } from './native-loader';
import type { LoadedBinary } from './native-loader';
import type { BuiltInRouting } from './gating/rule';
import type { WeightDtype } from './expert-weights';
import type { ResolvedOptimizer } from './optimizer';
import type { CacheCounts } from './expert-cache';

export interface NativeRoutingResult {
  experts: Int32Array;
  weights: Float32Array;
}

export interface NativeDispatchPlan {
  tokensPerExpert: Int32Array;
  expertOffsets: Int32Array;
  order: Int32Array;
}

/** A forward of a layer, routed in the core by its rule (moe/layer_router.h). */
export interface NativeForwardResult {
  output: Float32Array;
  /** [tokens * E] the router's logits (router bias added, exploration noise not). */
  logits: Float32Array;
  topK: number;
  experts: Int32Array;
  weights: Float32Array;
  tokensPerExpert: Int32Array;
  /** Absent where they are their default (a property costs a tiny forward ~0.1-0.2 us): slots dropped (0). */
  dropped?: number;
  /** x with jitter, as the router read it (absent: it read x). */
  routerInput?: Float32Array;
  /** The logits with exploration noise as the rule ranked them (absent without exploration noise). */
  ranked?: Float64Array;
  /** A training forward's seeds: the core routes it again with them (gateOf, backward); absent: none drawn. */
  draws?: NativeDraws;
  /** The balance losses the call asked for, in its order. */
  auxLosses?: NativeAuxLoss[];
}

/** A balance loss as the core computes it (moe::losses::Spec; lib/aux-losses.ts resolves the public spec to it). */
export interface NativeAuxLossSpec {
  kind: string;
  coefficient: number;
  sampleVariance: boolean;
  alpha: number;
  paperScale: boolean;
  /** 'sequence': tokens per sequence; 0 for the others. */
  sequenceLength: number;
}

/** A balance loss's value and gradients [tokens * E] (noise logits: the load loss only). */
export interface NativeAuxLoss {
  value: number;
  gradLogits: Float64Array;
  gradNoiseLogits: Float64Array | null;
}

/** A forward's training randomness: whether it trained, and the seed of each draw (jitter, exploration, the rule's). */
export interface NativeDraws {
  training: boolean;
  jitter: number;
  exploration: number;
  rule: number;
}

/** A routing rule's result as the core made it (moe::rules::Gate): null where the rule keeps no such array. */
export interface NativeGate {
  kind: string;
  topK: number;
  tokens: number;
  numExperts: number;
  experts: Int32Array;
  weights: Float64Array;
  tokensPerExpert: Int32Array;
  dropped: number;
  normalized: boolean;
  routeScale: number;
  capacity: number;
  droppedTokens: number;
  training: boolean;
  probs: Float64Array | null;
  selected: Int32Array | null;
  selectedWeights: Float64Array | null;
  clean: Float64Array | null;
  noisy: Float64Array | null;
  noiseStd: Float64Array | null;
  noise: Float64Array | null;
  noiseLogits: Float64Array | null;
  kthNoisy: Float64Array | null;
  kPlus1Noisy: Float64Array | null;
  kthExpert: Int32Array | null;
  kPlus1Expert: Int32Array | null;
}

/** The router's gradients of a backward, computed in the core (lib/gate-gradients.ts defines them). */
export interface NativeRouterGradients {
  gradWeights: Float64Array;
  gradLogits: Float64Array;
  gradRouter: Float64Array;
  gradNoiseLogits: Float64Array | null;
  gradNoiseRouter: Float64Array | null;
  gradRouterBias: F32;
}

/** Milliseconds spent in each phase of the last forward of a layer. */
export interface LayerTimings {
  router: number;
  routing: number;
  dispatch: number;
  experts: number;
  combine: number;
  total: number;
  /** Expert parallel: of `experts`, the time inside the all-to-all exchanges (waits for other ranks included). */
  exchange: number;
  /** Expert parallel: bytes this rank sent to and received from the others in those exchanges. */
  exchangeBytesSent: number;
  exchangeBytesReceived: number;
}

export interface NativeExperts {
  dispose(): void;
  packedBytes(): number;
}

/** Experts' weights read back from their packed form (null where the layer has none). */
export interface NativeExportedExperts {
  w1: Float32Array;
  w3: F32;
  w2: Float32Array;
  b1: F32;
  b3: F32;
  b2: F32;
  /** The experts in the weight arrays when not all numExperts: an expert-parallel rank's slice. */
  given?: number;
}

/** A backward's gradients (null where the layer has no such weight): the experts' part and the router's. */
export interface NativeBackwardResult {
  dx: Float32Array;
  dWeights: Float32Array;
  experts: NativeExportedExperts;
  shared: NativeExportedExperts | null;
  sharedGate: F32;
  router: NativeRouterGradients;
}

/** Arrays a backward overwrites instead of allocating (absent ones are allocated). */
export interface NativeGradientDestinations {
  dx?: Float32Array;
  experts?: Partial<Record<'w1' | 'w3' | 'w2' | 'b1' | 'b3' | 'b2', Float32Array>>;
  shared?: Partial<Record<'w1' | 'w3' | 'w2' | 'b1' | 'b3' | 'b2', Float32Array>>;
  sharedGate?: Float32Array;
}

export interface NativeLayer {
  /** The backward of a forward: the experts' part (core/backward.cpp), then the router's (core/layer_router.cpp). CPU layers. */
  backwardSync(call: NativeBackwardCall): NativeBackwardResult;
  /** The same on the job thread: `into` receives a copy when it settles. */
  backward(call: NativeBackwardCall): Promise<NativeBackwardResult>;
  /** One optimizer step on the packed float32 weights, in place (state kept in the core). */
  applyGradients(call: {
    grads: {
      router: F32;
      noiseRouter: F32;
      sharedGate: F32;
      experts: Partial<Record<'w1' | 'w3' | 'w2' | 'b1' | 'b3' | 'b2', F32>>;
      shared: Partial<Record<'w1' | 'w3' | 'w2' | 'b1' | 'b3' | 'b2', F32>> | null;
    };
    step: ResolvedOptimizer & { step: number };
  }): void;
  /** The weights as the kernels compute with them, in the [out, in] layout. CPU layers. */
  exportWeights(call: { routerOnly?: false }): {
    router: Float32Array;
    noiseRouter: F32;
    sharedGate: F32;
    experts: NativeExportedExperts;
    shared: NativeExportedExperts | null;
  };
  /** Only the router, noise router and shared gate (no expert arrays). */
  exportWeights(call: { routerOnly: true }): { router: Float32Array; noiseRouter: F32; sharedGate: F32 };
  /** The whole layer, routed in the core by its rule; keep: a training forward keeps what its backward needs. */
  forwardSync(call: NativeForwardCall): NativeForwardResult;
  forward(call: NativeForwardCall): Promise<NativeForwardResult>;
  /** The rule's gate of a forward of x that returned these logits and draws, routed again in the core (the same choices). */
  gateOf(call: { x: Float32Array; logits: Float32Array; tokens: number; draws: NativeDraws; selectionBias?: Float64Array }): NativeGate;
  /** The router bias (a layer with one) and sigmoidBias's selection bias, for the forwards called from now on. */
  setBiases(call: { routerBias?: Float32Array; selectionBias?: Float64Array }): void;
  /** dL/d(routing weight) per slot [tokens * k], float64: <gradOutput[t], slot output s>. */
  routingWeightGradients(call: { x: Float32Array; tokens: number; k: number; experts: Int32Array; gradOutput: Float32Array }): Float64Array;
  slotOutputs(call: { x: Float32Array; tokens: number; k: number; experts: Int32Array }): Float32Array;
  lastTimings(): LayerTimings;
  dispose(): void;
  packedBytes(): number;
  /** The host memory the layer holds now (weights, and training's state) and what V8 was last told of it. */
  memoryBytes(): { bytes: number; reported: number };
  /** An expert-parallel layer: this rank's call failed its checks before it reached the core; the others fail too. */
  collectiveFailed(): void;
  /** The routed experts, packed, written to an expert store (a temporary file renamed into place) on the job thread. */
  writeExpertStore(call: { path: string; fingerprint: string }): Promise<void>;
  /** A layer reading its experts through a cache: starts reading the experts its router picks for x; the reads started. */
  prefetch(call: { x: Float32Array; tokens: number }): number;
}

export interface NativeReadProbe {
  measure(call: { threads: number; passes: number }): number;
  dispose(): void;
}

type F32 = Float32Array | null;

/**
 * Experts as the binding reads them (native/binding/spec.cpp, by name): float32 arrays in the [out, in] layout,
 * null where absent. w1/w3 [numExperts, dHidden, dModel], w2 [numExperts, dModel, dHidden], biases per row.
 */
export interface NativeExpertSpec {
  numExperts: number;
  dModel: number;
  dHidden: number;
  activation: string;
  /** 'swiglu-clamped' only: its alpha and limit. */
  swigluAlpha?: number;
  swigluLimit?: number;
  /** How the packed weights are stored (an entry of the core's weight-dtype table). */
  weightDtype: WeightDtype;
  /** w2's, where it differs. */
  downWeightDtype?: WeightDtype;
  /** int8 / int4: inputs per scale, or 0 for one scale per row. */
  groupSize: number;
  /** The routed experts of a layer reading them from its expert store (spec.expertStore): no arrays then. */
  stored?: boolean;
  w1: NativeWeight | null;
  w3: NativeWeight | null;
  w2: NativeWeight | null;
  b1: F32;
  b3: F32;
  b2: F32;
}

/**
 * A weight matrix: float32 values, quantized codes and float16 scales (lib/quant.ts has the layout), or 16-bit
 * floats widened row by row as they are packed (a bf16 checkpoint never exists in float32 as a whole).
 */
export type NativeWeight =
  Float32Array | { codes: Int8Array | Uint8Array; scales: Uint16Array } | { bits: Uint16Array; format: 'bfloat16' | 'float16' };

/** Everything a native layer is built from, read by name and checked once in native/binding/spec.cpp. */
export interface NativeLayerSpec {
  experts: NativeExpertSpec;
  /** Always-on shared experts (same dModel and activation), or null. */
  shared: NativeExpertSpec | null;
  /** [sharedExperts, dModel]: each shared expert scaled by sigmoid(x . gate) (Qwen2-MoE), or null (weight 1). */
  sharedGate: F32;
  /** [numExperts, dModel] W_g. */
  router: Float32Array;
  /** [numExperts, dModel] W_noise of noisy top-k (packed once), or null. */
  noiseRouter: F32;
  topK: number;
  normalizeTopK: boolean;
  threads: number;
  backend: 'cpu' | 'cuda';
  /** Expert parallelism over an MPI job: true (even slices) or the routed experts per rank. */
  expertParallel?: boolean | number[];
  /** The rule the backend runs fused in its own forward: softmax top-k, (CUDA) DeepSeek-V3's sigmoid + bias, or none. */
  routing: BuiltInRouting;
  /** The layer's routing rule, which the core runs wherever the fused one does not apply. */
  rule: NativeRouterSpec;
  /** The routed experts read from the store at `path` (written for `fingerprint`) through `cache`; `label` names the layer in its stats. */
  expertStore?: { cache: NativeExpertCache; path: string; fingerprint: string; label: string };
}

/** Counts of an expert cache (moe::CacheCounts), in total and per layer: the fields of the public CacheCounts. */
export type NativeCacheCounts = CacheCounts;
export interface NativeExpertCacheStats extends NativeCacheCounts {
  budgetBytes: number;
  residentBytes: number;
  peakBytes: number;
  residentExperts: number;
  overBudgetBytes: number;
  layers: (NativeCacheCounts & { label: string; residentBytes: number; residentExperts: number })[];
}
export interface NativeExpertCache {
  stats(): NativeExpertCacheStats;
  resetStats(): void;
  clear(): void;
  dispose(): void;
}

/** config.router as the core's routing rules read it (moe::rules::Options; native/binding/gate_object.cpp). */
export interface NativeRuleOptions {
  kind: string;
  normalize: boolean;
  tiesHigher: boolean;
  /** 0: no capacity (gshardTop2 then takes 1, expertChoice 2). */
  capacityFactor: number;
  dropByScore: boolean;
  numGroups: number;
  topKGroups: number;
  routeScale: number;
  noiseEpsilon: number;
  /** gshardTop2's tokens per group; 0: the whole batch. */
  groupSize: number;
  randomRouting: boolean;
  explorationNoise: number;
  jitter: number;
  seed: number;
}

/** The rule's options plus the layer's biases: [E] added to the logits (gpt-oss), and sigmoidBias's selection bias. */
export interface NativeRouterSpec extends NativeRuleOptions {
  routerBias: F32;
  selectionBias: Float64Array | null;
}

/** MPI as this process sees it (backendInfo().mpi): compiled into this build, started, this rank in how many. */
export interface MpiInfo {
  compiled: boolean;
  initialized: boolean;
  rank: number;
  size: number;
  /** Why MPI is not available or not started yet; empty when it runs. */
  reason: string;
}

/** The routed experts an expert-parallel rank owns: `count` experts from `first`, of `size` ranks. */
export interface ExpertSlice {
  rank: number;
  size: number;
  first: number;
  count: number;
}

export interface NativeBinding {
  backendInfo(): {
    isa: 'avx512_bf16' | 'avx512' | 'avx2' | 'neon_dotprod' | 'neon' | 'scalar';
    threads: number;
    supportedIsas: string[];
    cuda: { compiled: boolean; devices: number; reason?: string };
    mpi: MpiInfo;
    /** Each backend's table of what it offers (moe/capabilities.h), and each feature's description. */
    backends: Record<'cpu' | 'cuda', { offers: Feature[]; weights: string }>;
    features: Record<Feature, string>;
  };
  /**
   * The core's constant tables: activations and weight dtypes (lib/activation.ts and lib/weight-dtypes.ts mirror
   * them), and what each backend offers (as backendInfo() has them, without asking any device).
   */
  coreTables(): {
    activations: Record<string, { gated: boolean }>;
    weightDtypes: Record<string, { bits: number; quantized: boolean }>;
    backends: Record<'cpu' | 'cuda', { offers: Feature[]; weights: string }>;
    features: Record<Feature, string>;
  };
  setThreads(call: { threads: number }): void;
  /** Starts MPI; which routed experts of numExperts this rank owns in an expert-parallel layer. */
  startMpi(call: { numExperts: number; slices?: readonly number[] }): ExpertSlice;
  measureFmaPeak(call: { threads: number; seconds: number }): number;
  routerLogits(call: { x: Float32Array; tokens: number; dModel: number; router: Float32Array; numExperts: number }): Float32Array;
  routerWeightGradient(call: {
    gradLogits: Float64Array;
    x: Float64Array | Float32Array;
    tokens: number;
    numExperts: number;
    dModel: number;
  }): Float64Array;
  /** dx += gradLogits router, in place (float64 rows per token, added once). */
  routerInputGradient(call: {
    gradLogits: Float64Array;
    router: Float32Array;
    tokens: number;
    numExperts: number;
    dModel: number;
    dx: Float32Array;
  }): void;
  topK(call: { logits: Float32Array; tokens: number; numExperts: number; k: number; normalize: boolean }): NativeRoutingResult;
  dispatch(call: { experts: Int32Array; numExperts: number }): NativeDispatchPlan;
  /** groupSize 0: one scale per row. */
  quantize(call: { tensor: Float32Array; rows: number; k: number; dtype: string; groupSize: number }): {
    codes: Uint8Array;
    scales: Uint16Array;
  };
  dequantize(call: {
    q: { codes: Int8Array | Uint8Array; scales: Uint16Array };
    rows: number;
    k: number;
    dtype: string;
    groupSize: number;
  }): Float32Array;
  expertFFN(call: NativeExpertFFNCall): Float32Array;
  expertFFNAsync(call: NativeExpertFFNCall): Promise<Float32Array>;
  combine(call: { slotOutputs: Float32Array; weights: Float32Array; tokens: number; k: number; dModel: number }): Float32Array;
  /** An ArrayBuffer of addon memory (huge pages), NOT initialised: for callers that write every byte first. */
  largeBuffer(call: { bytes: number }): ArrayBuffer;
  /** Every per-call options object the binding reads: its fields, by call (test/native-seam.test.ts). */
  signatures(): Record<string, string[]>;
  NativeExperts: new (spec: NativeExpertSpec) => NativeExperts;
  NativeLayer: {
    new (spec: NativeLayerSpec): NativeLayer;
    /** Packs off the event loop; the spec's arrays must stay unchanged until it settles. */
    build(spec: NativeLayerSpec): Promise<NativeLayer>;
  };
  NativeReadProbe: new (call: { bytes: number }) => NativeReadProbe;
  NativeExpertCache: new (call: { bytes: number; policy: 'lru' | 'lfru'; ioThreads: number; halfLife: number }) => NativeExpertCache;
  /** Whether the store at `path` holds experts of this spec's shape, packed by this build, for `fingerprint`. */
  expertStoreMatches(call: { path: string; fingerprint: string; experts: NativeExpertSpec }): boolean;
}

/**
 * The options objects of the calls (one per call, read by name and each field once in the binding: args.h). The
 * names of their fields are the binding's; test/native-seam.test.ts checks them against its declare() lists.
 */
export interface NativeForwardCall {
  x: Float32Array;
  tokens: number;
  out?: Float32Array;
  keep?: boolean;
  /** Training: the rule's noise, jitter, exploration and random routing apply. */
  training?: boolean;
  /** The balance losses to compute with the forward (checked by lib/aux-losses.ts). */
  auxLosses?: NativeAuxLossSpec[];
}

export interface NativeBackwardCall {
  x: Float32Array;
  tokens: number;
  k: number;
  experts: Int32Array;
  weights: Float32Array;
  gradOutput: Float32Array;
  into?: NativeGradientDestinations;
  /** The forward's logits, draws and selection bias: the core routes it again with them (the same choices). */
  logits: Float32Array;
  draws: NativeDraws;
  selectionBias?: Float64Array;
  /** Each balance loss's dL/dlogits [tokens * E] (and noisy top-k's dL/d(noise logits)), added in order. */
  aux?: { gradLogits: Float64Array; gradNoiseLogits?: Float64Array }[];
}
export interface NativeExpertFFNCall {
  experts: NativeExperts;
  x: Float32Array;
  tokens: number;
  k: number;
  expertOffsets: Int32Array;
  order: Int32Array;
}

/** The package root: the nearest folder above this file with our package.json (works from lib/ and dist/lib/). */
function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    const manifest = path.join(dir, 'package.json');
    if (fs.existsSync(manifest)) {
      try {
        if (JSON.parse(fs.readFileSync(manifest, 'utf8')).name === 'moe-kernels') return dir;
      } catch {
        /* not ours; keep looking */
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) return path.resolve(__dirname, '..');
    dir = parent;
  }
}

let loaded: { binding: NativeBinding; binary: LoadedBinary } | undefined;

/** The binding, loaded on first use (lib/native-loader.ts says from where, and explains a failure). */
export function native(): NativeBinding {
  if (!loaded) loaded = loadNativeBinding<NativeBinding>(packageRoot());
  return loaded.binding;
}

/** The file the binding was loaded from, and whether it is a source build, the prebuilt one or pinned. */
export function loadedBinary(): LoadedBinary {
  native();
  return { ...loaded!.binary };
}
