// The TypeScript tables of activations and weight dtypes are the core's: one entry per name on each side, with the
// same facts (a new activation or dtype missing from one side fails here).
import { ACTIVATIONS, ACTIVATION_TABLE, isGated } from '../lib/activation';
import { native } from '../lib/native';
import { QUANT_DTYPES, WEIGHT_DTYPES, WEIGHT_DTYPE_TABLE } from '../lib/weight-dtypes';

const core = () => native().coreTables();

describe('the core tables', () => {
  it('activations: the same names, in the same order, and the same gating', () => {
    const { activations } = core();
    expect(Object.keys(activations)).toEqual([...ACTIVATIONS]);
    for (const a of ACTIVATIONS) expect({ [a]: activations[a].gated }).toEqual({ [a]: ACTIVATION_TABLE[a].gated });
    expect(isGated('not an activation' as never)).toBe(false);
    expect(isGated('constructor' as never)).toBe(false);
  });

  it('weight dtypes: the same names, in the same order, bits and quantization', () => {
    const { weightDtypes } = core();
    expect(Object.keys(weightDtypes)).toEqual([...WEIGHT_DTYPES]);
    for (const d of WEIGHT_DTYPES) {
      expect({ [d]: weightDtypes[d].bits }).toEqual({ [d]: WEIGHT_DTYPE_TABLE[d].bits });
      expect({ [d]: weightDtypes[d].quantized }).toEqual({ [d]: (QUANT_DTYPES as readonly string[]).includes(d) });
    }
  });
});
