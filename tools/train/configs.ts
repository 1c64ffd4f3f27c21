/**
 * The six routing configurations the experiment compares, each as the article and its sources set them up.
 */
import { AuxLossSpec, RouterConfig } from '../../lib';

export interface TrainConfig {
  name: string;
  /** What the article (or the paper it cites) says the configuration should do. */
  source: string;
  router: RouterConfig;
  topK: number | 'all';
  auxLosses: AuxLossSpec[];
  zeroRouter?: boolean;
  /** false: the selected experts' weights are their softmax probabilities, not renormalised over the top-k. */
  normalizeTopK?: boolean;
  /** DeepSeek-V3's loss-free balancing: the selection bias moves by gamma after each step. */
  biasUpdate?: number;
}

export function trainConfigs(biasGamma: number): TrainConfig[] {
  return [
    {
      name: 'soft',
      source: 'every expert, softmax weights (dense mixture; Jacobs et al. 1991)',
      router: { kind: 'soft' },
      topK: 'all',
      auxLosses: [],
    },
    {
      name: 'top-2',
      source: 'softmax top-k, no balance loss',
      router: { kind: 'topK' },
      topK: 2,
      auxLosses: [],
    },
    {
      name: 'noisy top-2 + losses',
      source: 'noisy top-k with the importance and load losses, w = 0.1 each (Shazeer et al. 2017)',
      router: { kind: 'noisyTopK' },
      topK: 2,
      auxLosses: [
        { kind: 'importance', coefficient: 0.1 },
        { kind: 'load', coefficient: 0.1 },
      ],
    },
    {
      name: 'switch',
      source: 'top-1, capacity factor 1.25, balance loss alpha = 0.01 (Fedus et al. 2021)',
      router: { kind: 'switch', capacityFactor: 1.25 },
      topK: 1,
      auxLosses: [{ kind: 'switch', alpha: 0.01 }],
    },
    {
      name: 'zero init + exploration',
      source:
        'top-1 from a zero-initialised router with U[0, 1) exploration noise on the logits, weighted by its softmax probability (Chen et al. 2022)',
      router: { kind: 'topK', explorationNoise: 1 },
      topK: 1,
      auxLosses: [],
      zeroRouter: true,
      // A renormalised top-1 weight is always 1, and the router would get no gradient.
      normalizeTopK: false,
    },
    {
      name: 'zero init, no exploration',
      source: 'the control of the one above: the same zero-initialised top-1 router without the noise',
      router: { kind: 'topK' },
      topK: 1,
      auxLosses: [],
      zeroRouter: true,
      normalizeTopK: false,
    },
    {
      name: 'sigmoid + bias update',
      source: `DeepSeek-V3: sigmoid scores, top-2 by score + bias, bias += ${biasGamma} sign(mean load - load) per step`,
      router: { kind: 'sigmoidBias' },
      topK: 2,
      auxLosses: [],
      biasUpdate: biasGamma,
    },
  ];
}
