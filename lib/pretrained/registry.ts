/** The model families fromPretrained reads, by config.json model_type. Adding one: a file in families/ and a line here. */
import { rangeError } from '../errors';
import { Family, HfConfig } from './family';
import { deepseekV2, deepseekV3 } from './families/deepseek';
import { gptOss } from './families/gpt-oss';
import { mixtral } from './families/mixtral';
import { olmoe } from './families/olmoe';
import { qwen2Moe, qwen3Moe } from './families/qwen-moe';

export const FAMILIES: readonly Family[] = [mixtral, qwen2Moe, qwen3Moe, deepseekV2, deepseekV3, olmoe, gptOss];

/** The family of a config.json, by model_type. */
export function familyOf(config: HfConfig): Family {
  const type = config.model_type;
  const family = FAMILIES.find((f) => f.modelTypes.includes(type as string));
  if (!family)
    throw rangeError(
      `config.json "model_type" to be one of ${FAMILIES.flatMap((f) => f.modelTypes).join(', ')}`,
      type === undefined ? 'none' : JSON.stringify(type),
    );
  return family;
}
