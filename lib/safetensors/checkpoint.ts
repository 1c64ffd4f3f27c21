/**
 * A checkpoint's tensors across its files: one `model.safetensors`, or shards listed by
 * `model.safetensors.index.json` ({ "weight_map": { tensor name: shard file } }, as transformers writes them). Shards
 * are opened when a tensor in them is first asked for, so a layer's load touches only its own shards.
 */
import { promises as fs } from 'fs';
import * as path from 'path';
import { rangeError } from '../errors';
import { expectPath, fileError, isLibraryError, readSmallTextFile } from '../file-errors';
import { checkJsonStructure } from './json-structure';
import { Tensor } from '../tensor';
import { SafetensorsFile, ReadOptions } from './file';
import { TensorInfo } from './format';

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

/**
 * The real path of `file`, a file of the checkpoint directory `dir`, refused when a symbolic link leads it out of the
 * directory (a checkpoint from elsewhere could otherwise make the loader read any file the process can). One way
 * out is allowed: the Hugging Face hub cache, whose snapshots/<revision>/ files link to ../../blobs/ of the same
 * model's cache folder.
 */
export async function insideCheckpoint(dir: string, file: string, what: string): Promise<string> {
  const [realDir, real] = await Promise.all([fs.realpath(dir), fs.realpath(file)]).catch((err) => {
    throw fileError(err, file, `a readable file (${what})`);
  });
  const allowed = path.basename(path.dirname(realDir)) === 'snapshots' ? path.dirname(path.dirname(realDir)) : realDir;
  const relative = path.relative(allowed, real);
  if (relative === '' || relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative))
    throw rangeError(`${file} (${what}) to be a file inside ${dir}`, `a link to ${real}`);
  return real;
}

export class Checkpoint {
  private readonly files = new Map<string, Promise<SafetensorsFile>>();

  private constructor(
    /** The directory (or file) it was opened with. */
    readonly location: string,
    /** Tensor name -> the file that holds it (absolute paths). */
    private readonly weightMap: Map<string, string>,
    /** Files opened already (a single file is opened at once). */
    opened: SafetensorsFile[],
  ) {
    for (const f of opened) this.files.set(f.path, Promise.resolve(f));
  }

  /**
   * Opens a directory with `model.safetensors.index.json` (sharded) or `model.safetensors`, or a .safetensors file.
   * The index is checked here (shard names that stay in the directory); each shard's header when first used.
   */
  static async open(location: string): Promise<Checkpoint> {
    expectPath(location, 'a checkpoint path');
    const stat = await fs.stat(location).catch(() => undefined);
    if (!stat) throw rangeError(`a checkpoint directory or .safetensors file at ${location}`, 'nothing there');
    if (!stat.isDirectory()) return Checkpoint.single(location, location);
    const index = path.join(location, INDEX_FILE);
    if (!(await fs.lstat(index).catch(() => undefined))) {
      const single = path.join(location, SINGLE_FILE);
      if (!(await fs.lstat(single).catch(() => undefined)))
        throw rangeError(`${location} to hold ${INDEX_FILE} or ${SINGLE_FILE}`, 'neither');
      return Checkpoint.single(location, await insideCheckpoint(location, single, SINGLE_FILE));
    }
    const text = await readSmallTextFile(await insideCheckpoint(location, index, INDEX_FILE), INDEX_FILE);
    let parsed: unknown;
    try {
      checkJsonStructure(text, index, { duplicates: false });
      parsed = JSON.parse(text);
    } catch (err) {
      if (isLibraryError(err)) throw err;
      throw rangeError(`${index} to be JSON`, `a parse error (${(err as Error).message})`);
    }
    const map = (parsed as { weight_map?: unknown })?.weight_map;
    if (typeof map !== 'object' || map === null || Array.isArray(map))
      throw rangeError(`${index} to have a "weight_map" object`, JSON.stringify(map) ?? 'none');
    const weightMap = new Map<string, string>();
    for (const [name, file] of Object.entries(map)) {
      // A shard is a file name in the checkpoint's own directory: no path may lead out of it, on any platform (a
      // checkpoint written on Linux is read on Windows too): no '/', '\\' or ':' (a drive, a UNC path, a stream).
      if (typeof file !== 'string' || file === '' || /[\\/:\0]/.test(file) || file === '..' || file === '.')
        throw rangeError(`${index}: weight_map['${name}'] to be a file name in the checkpoint directory`, JSON.stringify(file));
      weightMap.set(name, path.join(location, file));
    }
    return new Checkpoint(location, weightMap, []);
  }

  private static async single(location: string, file: string): Promise<Checkpoint> {
    const f = await SafetensorsFile.open(file);
    return new Checkpoint(location, new Map(f.names().map((n) => [n, file])), [f]);
  }

  /** Every tensor name of the checkpoint (from the index, or the single file's header). */
  names(): string[] {
    return [...this.weightMap.keys()];
  }

  has(name: string): boolean {
    return this.weightMap.has(name);
  }

  /** The file that holds `name`, opened (its header checked); errors name the shard and the tensor. */
  async file(name: string): Promise<SafetensorsFile> {
    const file = this.weightMap.get(name);
    if (file === undefined) throw rangeError(`${this.location} to hold a tensor '${name}'`, 'no such tensor');
    let opened = this.files.get(file);
    if (!opened) {
      // (set before any await: the layer's checks ask for many tensors of one shard at once, and each must find
      // this one open, not open the shard again and leak a handle)
      opened = fs.lstat(file).then(
        () =>
          insideCheckpoint(this.location, file, `the shard listed for tensor '${name}' in ${INDEX_FILE}`).then((real) =>
            SafetensorsFile.open(real),
          ),
        () => Promise.reject(rangeError(`the shard ${file} (listed for tensor '${name}' in ${INDEX_FILE}) to exist`, 'no such file')),
      );
      this.files.set(file, opened);
    }
    const f = await opened;
    if (!f.has(name)) throw rangeError(`${file} to hold tensor '${name}' (as ${INDEX_FILE} says)`, 'no such tensor in that shard');
    return f;
  }

  async info(name: string): Promise<TensorInfo> {
    return (await this.file(name)).info(name);
  }

  async tensor(name: string, options?: ReadOptions): Promise<Tensor> {
    return (await this.file(name)).tensor(name, options);
  }

  /** Closes every file opened so far. */
  async close(): Promise<void> {
    const opened = [...this.files.values()];
    this.files.clear();
    await Promise.all(opened.map((p) => p.then((f) => f.close()).catch(() => undefined)));
  }
}
