/**
 * Where a layer's expert store lives and what it was written from: fromPretrained with `cache` packs each routed
 * expert once into a store file (native/src/core/expert_store.h) and reuses it while its fingerprint (the
 * checkpoint's files by name, size and modification time, the layer, its dtypes) still matches; a store of
 * anything else is rebuilt, never reused.
 */
import { createHash } from 'crypto';
import { promises as fs } from 'fs';
import * as path from 'path';
import { rangeError } from '../errors';
import type { MoEConfig } from '../layer-config';

/** Bump with a change of what the fingerprint covers (the store's own layout is versioned by the native side). */
const FINGERPRINT_VERSION = 1;

export interface StorePlan {
  path: string;
  fingerprint: string;
  label: string;
}

/** The files a checkpoint's layer is read from: a GGUF file, or a directory's config and safetensors. */
async function sourceFiles(location: string): Promise<string[]> {
  const stat = await fs.stat(location);
  if (stat.isFile() && !location.endsWith('config.json')) return [location];
  const dir = stat.isDirectory() ? location : path.dirname(location);
  const names = (await fs.readdir(dir)).filter(
    (n) => n === 'config.json' || n.endsWith('.safetensors') || n.endsWith('.safetensors.index.json'),
  );
  return names.sort().map((n) => path.join(dir, n));
}

/**
 * The store of `layer` of the checkpoint at `location` as `config` (its dtypes resolved) packs it: in `storeDir`, or
 * beside the checkpoint in `.moe-store`.
 */
export async function storePlan(location: string, layer: number, config: MoEConfig, storeDir?: string): Promise<StorePlan> {
  const files = await sourceFiles(location);
  const facts = await Promise.all(
    files.map(async (f) => {
      const s = await fs.stat(f);
      return [path.basename(f), s.size, s.mtimeMs];
    }),
  );
  const identity = JSON.stringify({
    version: FINGERPRINT_VERSION,
    files: facts,
    layer,
    weightDtype: config.weightDtype,
    downWeightDtype: config.downWeightDtype ?? null,
    groupSize: config.groupSize ?? null,
  });
  const fingerprint = createHash('sha256').update(identity).digest('hex');
  const resolved = path.resolve(location);
  const single = files.length === 1 && path.resolve(files[0]) === resolved; // (a GGUF file)
  const root = single || !(await fs.stat(resolved)).isDirectory() ? path.dirname(resolved) : resolved;
  const base = single ? path.basename(resolved).replace(/\.gguf$/i, '') : path.basename(root);
  const dir = storeDir ?? path.join(root, '.moe-store');
  try {
    await fs.mkdir(dir, { recursive: true });
  } catch (err) {
    throw rangeError(`a writable folder for the expert store at ${dir} (options.storeDir chooses another)`, (err as Error).message);
  }
  return {
    path: path.join(dir, `${base}.layer${layer}.${config.weightDtype}.moestore`),
    fingerprint,
    label: `${base} layer ${layer}`,
  };
}
