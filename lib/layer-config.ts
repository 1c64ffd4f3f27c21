/** An MoELayer's config: its fields, and their resolution (defaults, implied topK, backend) and checks. */
import { ACTIVATIONS, Activation, SWIGLU_CLAMPED_DEFAULTS } from './activation';
import { WeightDtype, resolveWeightFormat } from './expert-weights';
import { WEIGHT_DTYPES, isKQuant } from './weight-dtypes';
import { Capabilities, capabilities, requireFeature } from './capabilities';
import { describe, rangeError, typeError } from './errors';
import { ExpertSlice, native } from './native';
import { GroupSize } from './quant';
import { ROUTER_KINDS, RouterConfig, checkRouterConfig, impliedTopK } from './router-config';
import { MAX_ELEMENTS } from './tensor';
import { MAX_DIM, MAX_EXPERTS, expectBoolean, expectInteger, expectOneOf } from './validate';

export interface MoEConfig {
  dModel: number;
  dHidden: number;
  numExperts: number;
  /**
   * Experts per token, 1..numExperts. Required by the 'topK' (default), 'noisyTopK' and 'sigmoidBias'
   * routers; implied by 'soft' (numExperts), 'switch' (1) and 'gshardTop2' (2); unused by 'expertChoice'.
   */
  topK?: number;
  /**
   * Expert activation; 'swiglu' (the default) is silu(x W1^T) * (x W3^T), as in Mixtral; 'swiglu-clamped' is
   * gpt-oss's (lib/activation.ts), with swigluAlpha (default 1.702) and swigluLimit (default 7).
   */
  activation?: Activation;
  swigluAlpha?: number;
  swigluLimit?: number;
  /** For the default router: renormalise the top-k softmax weights to sum to 1 (Mixtral / HF, the default). */
  normalizeTopK?: boolean;
  /** Use at most this many threads of the shared pool for this layer; 0 (the default) = all, see setThreads. */
  threads?: number;
  /** The routing rule (default { kind: 'topK' }: Mixtral's softmax top-k); see gating/. */
  router?: RouterConfig;
  /** Always-on shared experts added to every token's output (DeepSeekMoE); weights.shared holds them. */
  sharedExperts?: number;
  /** Hidden width of each shared expert (default dHidden). */
  sharedHidden?: number;
  /**
   * Where the layer runs: 'cpu' (default); 'cuda' (bf16 weights on GPU 0, needs a CUDA build and a device);
   * 'auto' = 'cuda' when both exist, else 'cpu'. Inputs and outputs stay host float32 Tensors either way.
   */
  backend?: 'cpu' | 'cuda' | 'auto';
  /**
   * How the experts' weights (routed and shared) are stored: 'float32' (default), 'bfloat16' or 'float16' (half
   * the bytes), 'int8' or 'int4' (block-quantized, about a quarter and an eighth; lib/quant.ts has the formulas),
   * 'q4_k', 'q5_k' or 'q6_k' (llama.cpp's K-quants, GGUF's blocks; rows of whole super-blocks of 256).
   * Float weights are converted or quantized when the layer packs them; QuantizedTensors are taken as they are
   * (and, when this is not given, imply it). docs/precision.md says what each path rounds. The router stays
   * float32. The CUDA backend computes in bfloat16 whatever the dtype (int8 / int4 dequantized on upload).
   */
  weightDtype?: WeightDtype;
  /**
   * The down projection's (w2's) dtype where it differs from weightDtype's (w1, w3): GGUF's Q4_K_M and Q5_K_M files
   * keep some down projections as Q6_K. Only among the K-quants ('q4_k', 'q5_k', 'q6_k'); default: weightDtype.
   */
  downWeightDtype?: WeightDtype;
  /**
   * 'int8' / 'int4': inputs per float16 scale, a multiple of 8 dividing dModel and dHidden (default 32, a GGUF
   * Q8_0 / Q4_0 block), or 'row' for one scale per output row (vLLM's ExpertsInt8).
   */
  groupSize?: GroupSize;
  /**
   * Expert parallelism over the ranks of an MPI job (a build with `npm run build:mpi`, processes started by mpirun):
   * true splits the routed experts into contiguous slices as even as possible, or give the experts per rank
   * ([count per rank], zeros allowed). Every rank builds the layer with the same config and holds its slice's experts
   * only; forward is collective (docs/expert-parallel.md). CPU only.
   */
  expertParallel?: boolean | number[];
}

/** A config with every default filled in and every field checked; `backend` is the one the layer runs on. */
export type ResolvedConfig = Required<Omit<MoEConfig, 'router' | 'backend' | 'expertParallel' | 'downWeightDtype'>> & {
  /** Set only where it differs from weightDtype. */
  downWeightDtype?: WeightDtype;
  router: Readonly<RouterConfig>;
  backend: 'cpu' | 'cuda';
  /** false, true, or the routed experts per rank. */
  expertParallel: boolean | readonly number[];
  /** Expert parallel: this rank's routed experts, set by the layer once MPI is started (placeLayer), never by resolveConfig. */
  expertSlice?: ExpertSlice;
};

/**
 * What resolving a config needs to know of this process: whether CUDA can run here (backendInfo().cuda), and what
 * each backend offers (the core's tables).
 */
export interface HostFacts {
  cuda: { compiled: boolean; devices: number; reason?: string };
  capabilities: Capabilities;
}

/**
 * This process's facts for resolving `config`: the addon is asked about devices only when the config asks for a GPU
 * ('cuda' or 'auto'), since the first question starts the CUDA runtime in a CUDA build.
 */
export function hostFacts(config: MoEConfig): HostFacts {
  const b = typeof config === 'object' && config !== null ? config.backend : undefined;
  const cuda = b === 'cuda' || b === 'auto' ? native().backendInfo().cuda : { compiled: false, devices: 0 };
  return { cuda, capabilities: capabilities() };
}

/**
 * Checks a config and fills in its defaults. Pure: the result depends on the config and the host facts alone, and
 * nothing is started (MPI is started by placeLayer, when a layer is built).
 */
export function resolveConfig(config: MoEConfig, host: HostFacts): ResolvedConfig {
  if (typeof config !== 'object' || config === null) throw typeError('config to be an object', describe(config));
  const numExperts = expectInteger(config.numExperts, 'config.numExperts', 1, MAX_EXPERTS);
  const dHidden = expectInteger(config.dHidden, 'config.dHidden', 1, MAX_DIM);
  const router = (config.router ?? { kind: 'topK' }) as RouterConfig;
  const kind = typeof router === 'object' && router !== null ? router.kind : undefined;
  const implied = kind && ROUTER_KINDS.includes(kind) ? impliedTopK(kind, numExperts) : undefined;
  let topK: number;
  if (implied === 'experts choose') {
    if (config.topK !== undefined)
      throw rangeError("no config.topK with router 'expertChoice' (experts choose; see capacityFactor)", describe(config.topK));
    topK = 1;
  } else if (implied !== undefined) {
    if (config.topK !== undefined && config.topK !== implied)
      throw rangeError(`config.topK = ${implied} (implied by router '${kind}') or none`, describe(config.topK));
    topK = implied;
  } else topK = expectInteger(config.topK, `config.topK (numExperts = ${numExperts})`, 1, numExperts);
  const sharedExperts =
    config.sharedExperts === undefined ? 0 : expectInteger(config.sharedExperts, 'config.sharedExperts', 0, MAX_EXPERTS);
  const normalizeTopK = expectBoolean(config.normalizeTopK ?? true, 'config.normalizeTopK');
  const resolvedRouter = checkRouterConfig(
    kind === 'topK' && config.normalizeTopK !== undefined && (router as { normalize?: boolean }).normalize === undefined
      ? { ...router, normalize: normalizeTopK }
      : router,
    numExperts,
    topK,
  );
  const backend = resolveBackend(config.backend, host);
  if (sharedExperts > 0) requireFeature(host.capabilities, backend, 'sharedExperts');
  const expertParallel = resolveExpertParallel(config.expertParallel, numExperts);
  if (expertParallel !== false) requireFeature(host.capabilities, backend, 'expertParallel');
  const dModel = expectInteger(config.dModel, 'config.dModel', 1, MAX_DIM);
  const activation = expectOneOf(config.activation ?? 'swiglu', 'config.activation', ACTIVATIONS);
  const clamped = activation === 'swiglu-clamped';
  for (const key of ['swigluAlpha', 'swigluLimit'] as const) {
    const v = config[key];
    if (v === undefined) continue;
    if (!clamped) throw rangeError(`no config.${key} (activation '${activation}'; it belongs to 'swiglu-clamped')`, describe(v));
    if (typeof v !== 'number' || !Number.isFinite(v) || (key === 'swigluLimit' && v <= 0))
      throw rangeError(`config.${key} to be a finite number${key === 'swigluLimit' ? ' > 0' : ''}`, describe(v));
  }
  const sharedHidden = config.sharedHidden === undefined ? dHidden : expectInteger(config.sharedHidden, 'config.sharedHidden', 1, MAX_DIM);
  // Each weight tensor must be able to exist (V8's typed arrays end at 2^32 elements): refuse a config whose
  // experts could not be allocated before trying, instead of V8's raw "Invalid typed array length" or minutes
  // of allocation.
  for (const [name, count, hidden] of [
    ['experts', numExperts, dHidden],
    ['shared experts', sharedExperts, sharedHidden],
  ] as const) {
    if (count * hidden * dModel > MAX_ELEMENTS)
      throw rangeError(
        `the ${name}' weights (${count} x ${hidden} x ${dModel}) to have at most ${MAX_ELEMENTS} elements each`,
        `${count * hidden * dModel}`,
      );
  }
  const format = resolveWeightFormat(config.weightDtype, config.groupSize, 'config', [
    ['dModel', dModel],
    ['dHidden', dHidden],
    ...(sharedExperts > 0 ? [['sharedHidden', sharedHidden] as [string, number]] : []),
  ]);
  return {
    backend,
    dModel,
    dHidden,
    numExperts,
    topK,
    activation,
    swigluAlpha: config.swigluAlpha ?? SWIGLU_CLAMPED_DEFAULTS.alpha,
    swigluLimit: config.swigluLimit ?? SWIGLU_CLAMPED_DEFAULTS.limit,
    ...format,
    ...resolveDownDtype(config.downWeightDtype, format.weightDtype),
    normalizeTopK: kind === 'topK' ? ((resolvedRouter as { normalize?: boolean }).normalize ?? true) : normalizeTopK,
    threads: config.threads === undefined ? 0 : expectInteger(config.threads, 'config.threads', 0, 256),
    router: resolvedRouter,
    sharedExperts,
    sharedHidden,
    expertParallel,
  };
}

/**
 * config.downWeightDtype, checked: absent or equal to weightDtype (nothing to set), or another K-quant when weightDtype
 * is one (their rows are the same whole super-blocks, so weightDtype's checks of dModel and dHidden hold for it).
 */
function resolveDownDtype(down: unknown, weightDtype: WeightDtype): { downWeightDtype?: WeightDtype } {
  if (down === undefined || down === weightDtype) return {};
  const d = expectOneOf(down, 'config.downWeightDtype', WEIGHT_DTYPES);
  if (!isKQuant(weightDtype) || !isKQuant(d))
    throw rangeError(
      "config.downWeightDtype to differ from weightDtype only among the K-quants ('q4_k', 'q5_k', 'q6_k': GGUF's Q4_K_M / Q5_K_M mixes)",
      `weightDtype '${weightDtype}' and downWeightDtype '${d}'`,
    );
  return { downWeightDtype: d };
}

/** The config a layer is built with: an expert-parallel one learns its rank's experts here (this starts MPI). */
export function placeLayer(c: ResolvedConfig): ResolvedConfig {
  return c.expertParallel === false ? c : { ...c, expertSlice: expertSliceOf(c.numExperts, c.expertParallel) };
}

/** This rank's routed experts in an expert-parallel layer (starts MPI; a RangeError in a build without it). */
export function expertSliceOf(numExperts: number, expertParallel: true | readonly number[]): ExpertSlice {
  return native().startMpi({ numExperts, slices: expertParallel === true ? undefined : expertParallel });
}

/** false, true, or a list of expert counts per rank adding up to numExperts (the core checks it has one per rank). */
export function resolveExpertParallel(value: unknown, numExperts: number): boolean | readonly number[] {
  if (value === undefined || typeof value === 'boolean') return value ?? false;
  if (!Array.isArray(value))
    throw typeError('config.expertParallel to be a boolean or an array of expert counts per rank', describe(value));
  const counts = value.map((c, i) => expectInteger(c, `config.expertParallel[${i}]`, 0, numExperts));
  const sum = counts.reduce((a, b) => a + b, 0);
  if (sum !== numExperts) throw rangeError(`config.expertParallel's counts to add up to numExperts (${numExperts})`, `${sum}`);
  return Object.freeze(counts);
}

/** 'auto' picks CUDA when compiled and a device exists; 'cuda' must have both, with a message saying which is missing. */
function resolveBackend(backend: unknown, { cuda }: HostFacts): 'cpu' | 'cuda' {
  const b = expectOneOf(backend ?? 'cpu', 'config.backend', ['cpu', 'cuda', 'auto'] as const);
  if (b === 'cpu') return 'cpu';
  if (cuda.compiled && cuda.devices > 0) return 'cuda';
  if (b === 'auto') return 'cpu';
  throw rangeError(
    "backend 'cuda' to have a CUDA build and a device",
    cuda.compiled
      ? `no device (${cuda.reason ?? 'unknown'})`
      : 'a build without CUDA: build it where nvcc is installed with `node node_modules/moe-kernels/scripts/build-native.js --cuda` ' +
          '(in a clone: `npm run build:cuda`)',
  );
}
