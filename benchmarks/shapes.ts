/** The benchmark scenarios: four layer shapes and their token counts (issue: decode 1-16, prefill 128-8192). */
export interface Shape {
  name: string;
  dModel: number;
  dHidden: number;
  numExperts: number;
  topK: number;
  tokens: number[];
  note: string;
}

export const SHAPES: Shape[] = [
  {
    name: 'small',
    dModel: 1024,
    dHidden: 2816,
    numExperts: 8,
    topK: 2,
    tokens: [1, 4, 16, 128, 512, 2048, 8192],
    note: 'Mixtral-like, scaled down',
  },
  {
    name: 'fine-grained',
    dModel: 2048,
    dHidden: 1408,
    numExperts: 64,
    topK: 6,
    tokens: [1, 4, 16, 128, 512, 2048, 8192],
    note: 'DeepSeek-MoE / Qwen-MoE style',
  },
  {
    name: 'qwen3-30b-a3b',
    dModel: 2048,
    dHidden: 768,
    numExperts: 128,
    topK: 8,
    tokens: [1, 4, 16, 64, 512],
    note: 'Qwen3-30B-A3B (fine-grained: 128 experts of 768, top-8)',
  },
  {
    name: 'mixtral-8x7b',
    dModel: 4096,
    dHidden: 14336,
    numExperts: 8,
    topK: 2,
    tokens: [1, 4, 16],
    note: 'full size, decode only (fp32 weights 5.6 GB)',
  },
];

export const QUICK: Shape[] = [{ ...SHAPES[0], tokens: [1, 128] }];

/** Bytes of fp32 expert weights (router excluded). */
export function weightBytes(s: Shape): number {
  return s.numExperts * 3 * s.dModel * s.dHidden * 4;
}
