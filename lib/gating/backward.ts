import { describe, typeError } from '../errors';
import { GateResult } from './common';
import { ExpertChoiceGate, expertChoiceBackward } from './expert-choice';
import { GShardTop2Gate, gshardTop2Backward } from './gshard-top2';
import { NoisyTopKGate, noisyTopKBackward } from './noisy-top-k';
import { SigmoidBiasGate, sigmoidBiasBackward } from './sigmoid-bias';
import { SoftGate, softBackward } from './soft';
import { SwitchGate, switchTop1Backward } from './switch';
import { TopKGate, topKBackward } from './top-k';

/**
 * The backward pass of whichever rule made `gate`: dL/dlogits [T, E] from dL/dweights [T * topK], plus, for
 * noisy top-k, dL/d(x W_noise^T).
 */
export function backward(gate: GateResult, gradWeights: ArrayLike<number>): { gradLogits: Float64Array; gradNoiseLogits?: Float64Array } {
  switch (gate?.kind) {
    case 'topK': return { gradLogits: topKBackward(gate as TopKGate, gradWeights) };
    case 'soft': return { gradLogits: softBackward(gate as SoftGate, gradWeights) };
    case 'switch': return { gradLogits: switchTop1Backward(gate as SwitchGate, gradWeights) };
    case 'gshardTop2': return { gradLogits: gshardTop2Backward(gate as GShardTop2Gate, gradWeights) };
    case 'expertChoice': return { gradLogits: expertChoiceBackward(gate as ExpertChoiceGate, gradWeights) };
    case 'sigmoidBias': return { gradLogits: sigmoidBiasBackward(gate as SigmoidBiasGate, gradWeights) };
    case 'noisyTopK': {
      const g = noisyTopKBackward(gate as NoisyTopKGate, gradWeights);
      return { gradLogits: g.gradCleanLogits, gradNoiseLogits: g.gradNoiseLogits };
    }
  }
  throw typeError('gate to be a router result (with a kind)', describe(gate));
}
