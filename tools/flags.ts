/** A small --flag value parser shared by the command-line programs (cli/, benchmarks/); no dependency. */
export interface FlagSpec {
  name: string;
  help: string;
  default: string | number | boolean;
}

export function parseFlags(argv: string[], specs: FlagSpec[]): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const s of specs) out[s.name] = s.default;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) throw new Error(`unexpected argument '${arg}' (see --help)`);
    const [name, inline] = arg.slice(2).split('=', 2);
    const spec = specs.find((s) => s.name === name);
    if (!spec) throw new Error(`unknown flag --${name} (see --help)`);
    if (typeof spec.default === 'boolean') {
      out[name] = inline === undefined ? true : inline !== 'false';
      continue;
    }
    const value = inline ?? argv[++i];
    if (value === undefined) throw new Error(`--${name} needs a value`);
    if (typeof spec.default === 'number') {
      const n = Number(value);
      if (!Number.isFinite(n)) throw new Error(`--${name} expects a number, got '${value}'`);
      out[name] = n;
    } else out[name] = value;
  }
  return out;
}

export function usage(title: string, specs: FlagSpec[]): string {
  const lines = specs.map((s) => `  --${s.name.padEnd(12)} ${s.help} (default: ${s.default})`);
  return `${title}\n\n${lines.join('\n')}\n`;
}

export function median(values: number[]): number {
  const v = values.slice().sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}
