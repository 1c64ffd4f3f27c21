/** The `pretrained` namespace: what fromPretrained reads, and a look at a checkpoint before loading it. */
export { inspectPretrained as inspect, loadPretrained as load } from './load';
export type { FromPretrainedOptions, LoadProgress, PretrainedInfo, LoadedLayer } from './load';
export { FAMILIES } from './registry';
