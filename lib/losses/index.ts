/** Load-balancing losses, each with its value and analytic gradient (docs/losses.md). */
export { cvSquared } from './cv-squared';
export type { Variance } from './cv-squared';
export { importanceLoss } from './importance-loss';
export { loadLoss } from './load-loss';
export { switchLoss } from './switch-loss';
export { gshardLoss } from './gshard-loss';
export { mixtralLoss } from './mixtral-loss';
export { zLoss } from './z-loss';
export { sequenceBalanceLoss } from './sequence-balance-loss';
export { updateBalanceBias } from './update-balance-bias';
export { routingStats } from './routing-stats';
export type { RoutingStats } from './routing-stats';
export { softmaxBackward } from './softmax-backward';
