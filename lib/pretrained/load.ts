/**
 * MoELayer.fromPretrained: one MoE layer of a Hugging Face checkpoint (config.json + safetensors), read tensor by
 * tensor (only that layer's bytes), assembled expert by expert in the layer's weight dtype, then packed.
 */
import { promises as fs } from 'fs';
import * as path from 'path';
import { describe, rangeError, typeError } from '../errors';
import { WeightDtype } from '../expert-weights';
import { MoEConfig, expertSliceOf, hostFacts, resolveConfig, resolveExpertParallel } from '../layer-config';
import type { MoEWeights } from '../layer-weights';
import { GroupSize, QuantizedTensor, defaultGroup } from '../quant';
import { isKQuant, isQuantDtype } from '../weight-dtypes';
import { expectPath, isLibraryError, readSmallTextFile } from '../file-errors';
import { checkMemory, layerElements, packedBytes } from '../memory-limit';
import { Checkpoint, insideCheckpoint } from '../safetensors/checkpoint';
import { checkJsonStructure } from '../safetensors/json-structure';
import { Tensor } from '../tensor';
import { expectInteger, expectOptions } from '../validate';
import { Projection } from './assemble';
import { ExpertSources, Family, HfConfig, LayerPlan } from './family';
import { familyOf } from './registry';
import { Reader } from './sources';
import type { ExpertCache } from '../expert-cache';
import { GgufFile, isGgufFile } from '../gguf/file';
import { expertTensorTypes, ggufPlan, hfConfigOf } from '../gguf/layer-plan';

/**
 * How a GGUF file's expert tensors were taken: kept as they are (`exact`: Q8_0 / Q4_0 blocks as int8 / int4 groups,
 * K-quants as their dtype, F16 / BF16 / F32 as such, Q3_K / Q5_0 rewritten as q6_k / int8, any type widened to
 * float32) or converted with rounding (another dtype asked for).
 */
export interface GgufConversion {
  tensor: string;
  from: string;
  to: WeightDtype;
  exact: boolean;
}

export interface LoadProgress {
  /**
   * 'read': tensors being read; 'pack': weights handed to the kernels; 'store': (options.cache) the routed experts
   * being written to a new expert store; 'done'.
   */
  phase: 'read' | 'pack' | 'store' | 'done';
  /** Bytes of the checkpoint read so far, of totalBytes this layer needs. */
  bytesRead: number;
  totalBytes: number;
  /** The tensor (or expert) being read. */
  what?: string;
  /** At 'done', for a GGUF file: how each expert tensor was taken. */
  conversions?: GgufConversion[];
}

export interface FromPretrainedOptions {
  /** The decoder layer (model.layers.N); default: the first MoE layer. */
  layer?: number;
  /** How the experts are stored once loaded; default: 'bfloat16' (or the checkpoint's F32 / F16). */
  weightDtype?: WeightDtype;
  groupSize?: GroupSize;
  backend?: MoEConfig['backend'];
  threads?: number;
  onProgress?: (progress: LoadProgress) => void;
  signal?: AbortSignal;
  /**
   * Expert parallelism (config.expertParallel: true or experts per rank; a build with MPI, processes started by
   * mpirun): this rank reads only its slice of the routed experts from the checkpoint.
   */
  expertParallel?: boolean | number[];
  /**
   * Routed experts on disk, read through this cache (models larger than memory): the layer's experts are packed once
   * into an expert store (in storeDir, default `.moe-store` beside the checkpoint) and reused while the checkpoint and
   * these options are unchanged. CPU; inference (forward, slotOutputs, exportWeights, prefetch).
   */
  cache?: ExpertCache;
  /** Where the expert stores go (default: `.moe-store` beside the checkpoint). */
  storeDir?: string;
}

/** What a checkpoint directory holds, from its config.json: family, layers, MoE layers. */
export interface PretrainedInfo {
  family: string;
  modelType: string;
  numLayers: number;
  moeLayers: number[];
}

async function readConfig(location: string): Promise<HfConfig> {
  expectPath(location, 'a checkpoint directory');
  const stat = await fs.stat(location).catch(() => undefined);
  if (!stat) throw rangeError(`a checkpoint directory at ${location}`, 'nothing there');
  const dir = stat.isDirectory() ? location : path.dirname(location);
  const file = path.join(dir, 'config.json');
  if (!(await fs.lstat(file).catch(() => undefined))) throw rangeError(`${file} (the model's config)`, 'no such file');
  const text = await readSmallTextFile(await insideCheckpoint(dir, file, "the model's config"), "the model's config (config.json)");
  let config: unknown;
  try {
    checkJsonStructure(text, file, { duplicates: false });
    config = JSON.parse(text);
  } catch (err) {
    if (isLibraryError(err)) throw err;
    throw rangeError(`${file} to be JSON`, `a parse error (${(err as Error).message})`);
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config))
    throw rangeError(`${file} to hold a JSON object`, describe(config));
  return config as HfConfig;
}

/** The GGUF file at `location`, opened, or undefined when it is not one (a checkpoint directory, a config.json). */
async function openGguf(location: string): Promise<GgufFile | undefined> {
  expectPath(location, 'a checkpoint directory or GGUF file');
  const stat = await fs.stat(location).catch(() => undefined);
  if (!stat?.isFile() || !(await isGgufFile(location))) return undefined;
  return GgufFile.open(location);
}

/**
 * The MoE layers: the family's rule, and in a GGUF file only those with a router tensor (llama.cpp keeps no
 * decoder_sparse_step or mlp_only_layers: Qwen-MoE files with dense layers say so only by their tensors).
 */
function moeLayersOf(family: Family, config: HfConfig, gguf: GgufFile | undefined): number[] {
  const layers = family.moeLayers(config);
  return gguf ? layers.filter((l) => gguf.has(`blk.${l}.ffn_gate_inp.weight`)) : layers;
}

/** The family and MoE layers of the checkpoint at `location`, from its config.json or GGUF metadata (reads no tensor). */
export async function inspectPretrained(location: string): Promise<PretrainedInfo> {
  const gguf = await openGguf(location);
  let config: HfConfig;
  try {
    config = gguf ? hfConfigOf(gguf) : await readConfig(location);
  } finally {
    await gguf?.close();
  }
  const family = familyOf(config);
  return {
    family: family.name,
    modelType: config.model_type as string,
    numLayers: config.num_hidden_layers as number,
    moeLayers: moeLayersOf(family, config, gguf),
  };
}

/** A layer's config and weights as read from a checkpoint, before packing (`new MoELayer(config, weights)`). */
export interface LoadedLayer {
  config: MoEConfig;
  weights: MoEWeights<Tensor | QuantizedTensor>;
  family: Family;
  layer: number;
  bytesRead: number;
  /** For a GGUF file: how each expert tensor was taken. */
  conversions?: GgufConversion[];
}

/**
 * The dtype a GGUF file's experts keep by default: theirs where the library computes in it, a kept one that holds
 * the same weights in fewer bytes (Q3_K as q6_k, Q5_0 as int8), else float32 (exact).
 */
function ggufDefaultDtype(type: string): WeightDtype {
  const kept: Record<string, WeightDtype> = {
    F32: 'float32',
    F16: 'float16',
    BF16: 'bfloat16',
    Q8_0: 'int8',
    Q4_0: 'int4',
    Q4_K: 'q4_k',
    Q5_K: 'q5_k',
    Q6_K: 'q6_k',
    MXFP4: 'bfloat16',
    Q3_K: 'q6_k', // (lossless rewrites: gguf/transcode.ts)
    Q5_0: 'int8',
  };
  return kept[type] ?? 'float32';
}

/** The group size a dtype gets when none is asked for. */
function groupFor(dtype: WeightDtype): number {
  return isQuantDtype(dtype) ? defaultGroup(dtype) : 32;
}

/** Whether taking a `from` tensor as `to` (groups of `group`) loses nothing. */
function exactConversion(from: string, to: WeightDtype, group: GroupSize): boolean {
  if (to === 'float32') return true;
  if (to === 'float16') return from === 'F16';
  // MXFP4 values (a 2-bit mantissa times a power of two) are bfloat16 values
  if (to === 'bfloat16') return from === 'BF16' || from === 'MXFP4';
  // the blocks themselves, or Q3_K's rewritten as Q6_K
  if (to === 'q4_k' || to === 'q5_k' || to === 'q6_k') return from === to.toUpperCase() || (to === 'q6_k' && from === 'Q3_K');
  return group === 32 && ((to === 'int8' && (from === 'Q8_0' || from === 'Q5_0')) || (to === 'int4' && from === 'Q4_0'));
}

/** Reads the weights and config of one MoE layer (MoELayer.fromPretrained builds the layer from them). */
export async function loadPretrained(location: string, options: FromPretrainedOptions = {}, routed = true): Promise<LoadedLayer> {
  if (typeof location !== 'string') throw typeError('a checkpoint directory (string)', describe(location));
  const o = expectOptions(options) as FromPretrainedOptions;
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function')
    throw typeError('options.onProgress to be a function', describe(o.onProgress));
  const signal = o.signal;
  if (signal !== undefined && (typeof signal !== 'object' || signal === null || typeof signal.throwIfAborted !== 'function'))
    throw typeError('options.signal to be an AbortSignal', describe(signal));
  signal?.throwIfAborted();
  const gguf = await openGguf(location);
  try {
    return await loadFrom(location, gguf, o, routed);
  } finally {
    await gguf?.close();
  }
}

/**
 * loadPretrained from a checkpoint directory, or from an open GGUF file. Without `routed`, the routed experts'
 * tensors are checked but not read (a layer whose experts come from its expert store): weights has no w1 / w3 / w2
 * and no routed biases then.
 */
async function loadFrom(location: string, gguf: GgufFile | undefined, o: FromPretrainedOptions, routed: boolean): Promise<LoadedLayer> {
  const signal = o.signal;
  const config = gguf ? hfConfigOf(gguf) : await readConfig(location);
  const family = familyOf(config);
  const moe = moeLayersOf(family, config, gguf);
  if (moe.length === 0)
    throw rangeError(`a checkpoint with MoE layers (${family.name})`, `none by its ${gguf ? 'metadata' : 'config.json'}`);
  const layer = o.layer === undefined ? moe[0] : expectInteger(o.layer, 'options.layer', 0);
  if (!moe.includes(layer))
    throw rangeError(
      `options.layer to be an MoE layer of this ${family.name} model (${summarize(moe)})`,
      `${layer}${layer < (config.num_hidden_layers as number) ? ' (a dense layer)' : ''}`,
    );
  const checkpoint = gguf ? undefined : await Checkpoint.open(location);
  try {
    const plan = gguf ? ggufPlan(gguf, family, config, layer) : family.plan(config, layer, (name) => checkpoint!.has(name));
    // The layer's config checked before any tensor is: the counts and sizes config.json gives (experts, top-k,
    // widths) within the library's limits, and top-k within the experts (once found only after the whole read).
    const cpu: MoEConfig = { ...plan.config, backend: 'cpu' }; // (the backend is chosen when the layer is built)
    const resolved = resolveConfig(cpu, hostFacts(cpu));
    const parallel = resolveExpertParallel(o.expertParallel, plan.config.numExperts);
    // Expert parallel: this rank's routed experts, the only ones it reads (every rank reads the router and the
    // shared experts).
    const slice = parallel === false ? undefined : expertSliceOf(plan.config.numExperts, parallel);
    const range = slice ?? { first: 0, count: plan.experts.count };
    let bytesRead = 0;
    let totalBytes = 0;
    let what: string | undefined;
    const report = (phase: LoadProgress['phase']) => o.onProgress?.({ phase, bytesRead, totalBytes, what });
    const reader = new Reader(checkpoint, signal, (bytes) => {
      bytesRead += bytes;
      report('read');
    });
    // Every tensor checked (present, shaped, typed) before anything large is read. The router ([numExperts, dModel])
    // and the last expert first: a config.json that claims more experts or other widths than the tensors have is
    // refused by them before a check per claimed expert is made (1e9 experts once ran for minutes).
    const routerBytes = await plan.router.check(reader);
    if (range.count > 0) await Promise.all(checkExperts(plan.experts, reader, { first: range.first + range.count - 1, count: 1 }));
    const checks: Promise<number>[] = [Promise.resolve(routerBytes)];
    for (const extra of [plan.routerBias, plan.selectionBias, plan.sharedGate]) if (extra) checks.push(extra.check(reader));
    if (routed) checks.push(...checkExperts(plan.experts, reader, range));
    if (plan.shared) checks.push(...checkExperts(plan.shared, reader));
    totalBytes = (await Promise.all(checks)).reduce((a, b) => a + b, 0);
    const groupSize = o.groupSize;
    let weightDtype: WeightDtype;
    let downDtype: WeightDtype | undefined; // w2's, where a GGUF file keeps it in another K-quant (Q4_K_M)
    let conversions: GgufConversion[] | undefined;
    if (gguf) {
      const types = expertTensorTypes(gguf, layer);
      const isDown = (name: string) => /\.ffn_down[._]/.test(name);
      const up = types.find((t) => !isDown(t.name))?.type ?? 'F32';
      const down = types.find((t) => isDown(t.name))?.type ?? up;
      weightDtype = o.weightDtype ?? ggufDefaultDtype(up);
      const keptDown = ggufDefaultDtype(down);
      if (o.weightDtype === undefined && keptDown !== weightDtype && isKQuant(keptDown) && isKQuant(weightDtype)) downDtype = keptDown;
      conversions = types.map(({ name, type }) => {
        const to = isDown(name) ? (downDtype ?? weightDtype) : weightDtype;
        return { tensor: name, from: type, to, exact: exactConversion(type, to, groupSize ?? groupFor(to)) };
      });
    } else {
      const first = await reader.info(firstTensorName(plan));
      weightDtype = o.weightDtype ?? (first.dtype === 'F32' ? 'float32' : first.dtype === 'F16' ? 'float16' : 'bfloat16');
    }
    // What the load holds at its peak: the layer assembled in its dtype, then its packed copy.
    const elements = layerElements({ ...resolved, numExperts: routed ? range.count : 0 });
    checkMemory(2 * packedBytes(elements, weightDtype), `layer ${layer} of ${location}, assembled and packed`);
    const weights = {
      router: Tensor.from(await plan.router.read(reader), [plan.config.numExperts, plan.config.dModel]),
      ...(routed
        ? await readExperts(
            plan.experts,
            plan.config.dModel,
            weightDtype,
            groupSize ?? groupFor(weightDtype),
            reader,
            (w) => (what = w),
            range,
            downDtype,
          )
        : {}),
    } as MoEWeights<Tensor | QuantizedTensor>;
    if (plan.routerBias) weights.routerBias = Tensor.from(await plan.routerBias.read(reader), [plan.config.numExperts]);
    if (plan.shared)
      weights.shared = await readExperts(
        plan.shared,
        plan.config.dModel,
        weightDtype,
        groupSize ?? groupFor(weightDtype),
        reader,
        (w) => (what = `shared ${w}`),
        undefined,
        downDtype,
      );
    if (plan.sharedGate) weights.sharedGate = Tensor.from(await plan.sharedGate.read(reader), [1, plan.config.dModel]);
    let router = plan.config.router!;
    if (plan.selectionBias) router = { ...router, bias: await plan.selectionBias.read(reader) } as typeof router;
    what = undefined;
    report('pack');
    const layerConfig: MoEConfig = {
      ...plan.config,
      router,
      weightDtype,
      ...(downDtype !== undefined ? { downWeightDtype: downDtype } : {}),
      ...(groupSize !== undefined ? { groupSize } : {}),
      ...(o.backend !== undefined ? { backend: o.backend } : {}),
      ...(o.threads !== undefined ? { threads: o.threads } : {}),
      ...(parallel !== false ? { expertParallel: parallel === true ? true : [...parallel] } : {}),
    };
    return { config: layerConfig, weights, family, layer, bytesRead, ...(conversions ? { conversions } : {}) };
  } finally {
    await checkpoint?.close();
  }
}

/** Experts first .. first + count - 1 of a set (all by default). */
interface ExpertRange {
  first: number;
  count: number;
}

function checkExperts(set: ExpertSources, reader: Reader, range: ExpertRange = { first: 0, count: set.count }): Promise<number>[] {
  const out: Promise<number>[] = [];
  for (let e = range.first; e < range.first + range.count; e++) {
    out.push(set.w1(e).check(reader), set.w2(e).check(reader));
    if (set.w3) out.push(set.w3(e).check(reader));
  }
  for (const b of [set.b1, set.b3, set.b2]) if (b) out.push(b.check(reader));
  return out;
}

function firstTensorName(plan: LayerPlan): string {
  return plan.router.name;
}

async function readExperts(
  set: ExpertSources,
  dModel: number,
  dtype: WeightDtype,
  groupSize: GroupSize,
  reader: Reader,
  now: (what: string) => void,
  range: ExpertRange = { first: 0, count: set.count },
  downDtype: WeightDtype = dtype,
) {
  const h = set.dHidden;
  const { first, count } = range;
  const w1 = new Projection(count, h, dModel, dtype, groupSize);
  const w3 = set.w3 ? new Projection(count, h, dModel, dtype, groupSize) : undefined;
  const w2 = new Projection(count, dModel, h, downDtype, groupSize);
  for (let e = first; e < first + count; e++) {
    now(`expert ${e}`);
    await w1.put(e - first, await set.w1(e).read(reader));
    if (w3 && set.w3) await w3.put(e - first, await set.w3(e).read(reader));
    await w2.put(e - first, await set.w2(e).read(reader));
  }
  // (the biases of all experts are one tensor: read whole, the range's rows kept)
  const bias = async (b: ExpertSources['b1'], n: number) =>
    b ? Tensor.from((await b.read(reader)).slice(first * n, (first + count) * n), [count, n]) : undefined;
  return {
    w1: w1.result(),
    ...(w3 ? { w3: w3.result() } : {}),
    w2: w2.result(),
    ...(set.b1 ? { b1: await bias(set.b1, h) } : {}),
    ...(set.b3 ? { b3: await bias(set.b3, h) } : {}),
    ...(set.b2 ? { b2: await bias(set.b2, dModel) } : {}),
  };
}

/** "0-31" or "1, 3, 5, ..." */
function summarize(layers: number[]): string {
  const contiguous = layers.every((l, i) => i === 0 || l === layers[i - 1] + 1);
  if (contiguous && layers.length > 2) return `layers ${layers[0]}-${layers[layers.length - 1]}`;
  return `layers ${layers.slice(0, 8).join(', ')}${layers.length > 8 ? ', ...' : ''}`;
}
