/**
 * Opening files the library reads (checkpoints, configs, safetensors) and writes (safetensors.save), with every
 * failure in the one error format: a path with a NUL byte, nothing there, a directory, a FIFO or device (whose open
 * or read never returns), no permission. Node's own errors (a bare ENOENT, EISDIR, ERR_INVALID_ARG_VALUE) name
 * neither what was expected nor which of the library's files it was.
 */
import { constants, promises as fs } from 'fs';
import { ERROR_PREFIX, describe, rangeError, typeError } from './errors';

/** A path argument: a non-empty string without NUL bytes (Node refuses those with an error of its own). */
export function expectPath(value: unknown, name: string): string {
  if (typeof value !== 'string') throw typeError(`${name} to be a path (a string)`, describe(value));
  if (value === '') throw rangeError(`${name} to be a path`, 'an empty string');
  if (value.includes('\0')) throw rangeError(`${name} to be a path without NUL bytes`, JSON.stringify(value));
  return value;
}

/** Whether `err` is one of the library's own errors (by its message: Node's errors come from another realm in Jest). */
export function isLibraryError(err: unknown): boolean {
  return typeof (err as Error)?.message === 'string' && (err as Error).message.startsWith(ERROR_PREFIX);
}

/** A Node file-system error as a RangeError in the format, naming `file` and what was expected of it. */
export function fileError(err: unknown, file: string, expected: string): Error {
  const code = (err as NodeJS.ErrnoException)?.code;
  const reasons: Record<string, string> = {
    ENOENT: 'no such file or directory',
    EISDIR: 'a directory',
    ENOTDIR: 'a path through something that is not a directory',
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    ELOOP: 'too many levels of symbolic links',
    ENAMETOOLONG: 'a name too long',
    EMFILE: 'too many open files',
    ENOSPC: 'no space left on the device',
    EROFS: 'a read-only file system',
    EBADF: 'a file closed while it was being read',
  };
  if (isLibraryError(err)) return err as Error;
  if (code && reasons[code]) return rangeError(`${file} to be ${expected}`, `${reasons[code]} (${code})`);
  const message = (err as Error)?.message;
  return rangeError(`${file} to be ${expected}`, typeof message === 'string' ? `an error (${message})` : describe(err));
}

/**
 * Opens `file` for reading only if it is a regular file: the open does not wait for a FIFO's writer (O_NONBLOCK,
 * where the platform has it) and the opened handle is checked to be a file, so what is read is what was checked.
 */
export async function openRegularFile(file: string, what: string): Promise<fs.FileHandle> {
  expectPath(file, what);
  const flags = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0);
  const handle = await fs.open(file, flags).catch((err) => {
    throw fileError(err, file, `a readable file (${what})`);
  });
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw rangeError(`${file} to be a regular file (${what})`, kindOf(stat));
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err;
  }
  return handle;
}

/** Reads a whole small regular file (config.json, an index) as UTF-8, refusing anything else and anything over `limit` bytes. */
export async function readSmallTextFile(file: string, what: string, limit = 100_000_000): Promise<string> {
  const handle = await openRegularFile(file, what);
  try {
    const { size } = await handle.stat();
    if (size > limit) throw rangeError(`${file} (${what}) to be at most ${limit} bytes`, `${size} bytes`);
    return (await handle.readFile()).toString('utf8');
  } catch (err) {
    throw isLibraryError(err) ? err : fileError(err, file, `a readable file (${what})`);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

function kindOf(stat: {
  isDirectory(): boolean;
  isFIFO(): boolean;
  isSocket(): boolean;
  isCharacterDevice(): boolean;
  isBlockDevice(): boolean;
}): string {
  if (stat.isDirectory()) return 'a directory';
  if (stat.isFIFO()) return 'a FIFO (named pipe)';
  if (stat.isSocket()) return 'a socket';
  if (stat.isCharacterDevice() || stat.isBlockDevice()) return 'a device';
  return 'something that is not a file';
}
