/**
 * A model family: how its config.json says which decoder layers are MoE, how its hyper-parameters become an
 * MoEConfig, and where its tensors are. One file per family in families/ (transformers' modeling code for each is
 * the source of its semantics); registry.ts lists them.
 */
import { Activation } from '../activation';
import { rangeError } from '../errors';
import { MoEConfig } from '../layer-config';
import { MatrixSource, WholeSource, linear as linearOf, stackedRows as stackedRowsOf } from './sources';

/** config.json as parsed. */
export type HfConfig = Readonly<Record<string, unknown>>;

/** A small [E, n] tensor (a stacked bias), or a slice of one: read whole, as float32. */
export interface BiasSource {
  name: string;
  check: WholeSource['check'];
  read: WholeSource['read'];
}

/** The experts of a layer (routed or shared): count, width, and a source per expert and projection. */
export interface ExpertSources {
  count: number;
  dHidden: number;
  w1: (e: number) => MatrixSource;
  w3?: (e: number) => MatrixSource;
  w2: (e: number) => MatrixSource;
  b1?: BiasSource;
  b3?: BiasSource;
  b2?: BiasSource;
}

/** Everything one MoE layer is loaded from. */
export interface LayerPlan {
  /** The layer's config without weightDtype, groupSize, backend and threads (the caller's choices). */
  config: MoEConfig;
  router: WholeSource;
  /** Added to the router logits (gpt-oss). */
  routerBias?: WholeSource;
  /** DeepSeek-V3's e_score_correction_bias: config.router.bias (selection only). */
  selectionBias?: WholeSource;
  experts: ExpertSources;
  shared?: ExpertSources;
  /** Qwen2-MoE's shared_expert_gate [1, dModel]. */
  sharedGate?: WholeSource;
}

export interface Family {
  /** A short name for messages and the CLI ('mixtral', 'qwen2-moe', ...). */
  name: string;
  /** config.json model_type values it reads. */
  modelTypes: readonly string[];
  /** The decoder layers that are MoE, in order. */
  moeLayers(config: HfConfig): number[];
  /** The plan of MoE layer `layer`; `has` tells which tensor names the checkpoint holds (to pick a layout). */
  plan(config: HfConfig, layer: number, has: (name: string) => boolean): LayerPlan;
}

/** A config.json field read with a clear error naming it (a RangeError in the one format). */
export function field(config: HfConfig, key: string) {
  const value = config[key];
  const where = `config.json "${key}"`;
  return {
    integer(fallback?: number, min = 0, max = MAX_CONFIG_INTEGER): number {
      const v = value === undefined || value === null ? fallback : value;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
        throw rangeError(`${where} to be an integer in [${min}, ${max}]`, v === undefined ? 'none' : JSON.stringify(v));
      return v;
    },
    number(fallback?: number): number {
      const v = value === undefined || value === null ? fallback : value;
      if (typeof v !== 'number' || !Number.isFinite(v))
        throw rangeError(`${where} to be a finite number`, v === undefined ? 'none' : JSON.stringify(v));
      return v;
    },
    boolean(fallback?: boolean): boolean {
      const v = value === undefined || value === null ? fallback : value;
      if (typeof v !== 'boolean') throw rangeError(`${where} to be true or false`, v === undefined ? 'none' : JSON.stringify(v));
      return v;
    },
    string(fallback?: string): string {
      const v = value === undefined || value === null ? fallback : value;
      if (typeof v !== 'string') throw rangeError(`${where} to be a string`, v === undefined ? 'none' : JSON.stringify(v));
      return v;
    },
    integers(fallback: number[] = []): number[] {
      const v = value === undefined || value === null ? fallback : value;
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'number' || !Number.isInteger(x)))
        throw rangeError(`${where} to be an array of integers`, JSON.stringify(v));
      return v as number[];
    },
  };
}

/** The gated activation of a `hidden_act` (the experts' act_fn applied to the gate projection). */
export function gatedActivation(config: HfConfig): Activation {
  const act = field(config, 'hidden_act').string('silu');
  if (act === 'silu' || act === 'swish') return 'swiglu';
  if (act === 'gelu') return 'geglu';
  throw rangeError(`config.json "hidden_act" to be 'silu' or 'gelu' (the gated activations moe-kernels has)`, `'${act}'`);
}

/**
 * The largest count or size a config.json field may give: the library's own limits (2^24 experts, dimensions of
 * 2^31 - 1) are checked against the tensors when a layer is planned; this bound keeps a number like 1e300 from
 * reaching arithmetic or a loop before that (issue 34).
 */
export const MAX_CONFIG_INTEGER = 2 ** 31 - 1;
/**
 * The most decoder layers a config.json may declare: far past any published model (DeepSeek-V3 has 61, the largest
 * dense ones about 130), and small enough to list every layer's number without a thought. `pretrained.inspect`
 * reads no tensor, so no tensor can bound it; 1e9 once made it run V8 out of memory.
 */
export const MAX_LAYERS = 65_536;

/** The number of decoder layers, checked. */
export function numLayers(config: HfConfig): number {
  return field(config, 'num_hidden_layers').integer(undefined, 1, MAX_LAYERS);
}

/**
 * The experts' projections in the per-expert layout (`<prefix>.<e>.<gate>.weight`, ...) or, when the checkpoint has
 * `<prefix>.gate_up_proj`, in transformers' stacked layout (gate_up_proj [E, 2 I, H], gate rows first, then up;
 * down_proj [E, H, I]).
 */
export function expertSources(
  prefix: string,
  names: { gate: string; up: string; down: string },
  count: number,
  dModel: number,
  dHidden: number,
  has: (name: string) => boolean,
  fp8Block?: number,
): ExpertSources {
  const stacked = `${prefix}.gate_up_proj`;
  if (has(stacked)) {
    const up = [count, 2 * dHidden, dModel];
    const down = [count, dModel, dHidden];
    return {
      count,
      dHidden,
      w1: (e) => stackedRowsOf(stacked, e, up, 0, dHidden, 'gate half of gate_up_proj'),
      w3: (e) => stackedRowsOf(stacked, e, up, dHidden, dHidden, 'up half of gate_up_proj'),
      w2: (e) => stackedRowsOf(`${prefix}.down_proj`, e, down, 0, dModel, 'down_proj'),
    };
  }
  return {
    count,
    dHidden,
    w1: (e) => linearOf(`${prefix}.${e}.${names.gate}.weight`, dHidden, dModel, `expert ${e} ${names.gate}`, fp8Block),
    w3: (e) => linearOf(`${prefix}.${e}.${names.up}.weight`, dHidden, dModel, `expert ${e} ${names.up}`, fp8Block),
    w2: (e) => linearOf(`${prefix}.${e}.${names.down}.weight`, dModel, dHidden, `expert ${e} ${names.down}`, fp8Block),
  };
}

/** One dense MLP (a shared expert) as an expert set of one. */
export function mlpSources(prefix: string, dModel: number, dHidden: number, fp8Block?: number): ExpertSources {
  return {
    count: 1,
    dHidden,
    w1: () => linearOf(`${prefix}.gate_proj.weight`, dHidden, dModel, 'shared expert gate_proj', fp8Block),
    w3: () => linearOf(`${prefix}.up_proj.weight`, dHidden, dModel, 'shared expert up_proj', fp8Block),
    w2: () => linearOf(`${prefix}.down_proj.weight`, dModel, dHidden, 'shared expert down_proj', fp8Block),
  };
}
