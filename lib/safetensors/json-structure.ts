/**
 * A scan of JSON text before JSON.parse, for what JSON.parse lets through: nesting deep enough to overflow the
 * stack of whatever walks the value next (the header's checks, an error message's JSON.stringify), and a key given
 * twice in one object, which JSON.parse resolves silently to the last (a tensor named twice, once F32 and once I32,
 * or two __metadata__ objects). Malformed text is left for JSON.parse to report.
 */
import { rangeError } from '../errors';

/** serde_json's recursion limit, which the reference safetensors reader parses headers with. */
export const MAX_JSON_DEPTH = 128;

export function checkJsonStructure(text: string, where: string, options: { duplicates: boolean; maxDepth?: number }): void {
  const maxDepth = options.maxDepth ?? MAX_JSON_DEPTH;
  const stack: (Set<string> | null)[] = []; // per open container: the keys of an object seen so far, null for an array
  let keyNext = false; // whether the next string is an object's key
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const ch = text.charCodeAt(i);
    if (ch === 0x22 /* " */) {
      let j = i + 1;
      while (j < n && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c /* \ */ ? 2 : 1;
      const keys = stack[stack.length - 1];
      if (keyNext && keys && options.duplicates) {
        let key: string;
        try {
          key = JSON.parse(text.slice(i, j + 1)) as string;
        } catch {
          return; // malformed: JSON.parse says where
        }
        if (keys.has(key)) throw rangeError(`${where} to name each key of an object once`, `'${key.slice(0, 200)}' twice`);
        keys.add(key);
      }
      keyNext = false;
      i = j;
    } else if (ch === 0x7b /* { */ || ch === 0x5b /* [ */) {
      if (stack.length >= maxDepth) throw rangeError(`${where} to nest objects and arrays at most ${maxDepth} deep`, 'deeper nesting');
      stack.push(ch === 0x7b ? new Set() : null);
      keyNext = ch === 0x7b;
    } else if (ch === 0x7d /* } */ || ch === 0x5d /* ] */) {
      stack.pop();
      keyNext = false;
    } else if (ch === 0x2c /* , */) {
      keyNext = stack.length > 0 && stack[stack.length - 1] !== null;
    }
  }
}
