import { ACTIVATIONS, Activation } from './activation';
import { describe, typeError } from './errors';
import { ExpertWeights, expertArrays } from './expert-weights';
import { NativeForwardResult, NativeLayer, native } from './native';
import { Random } from './random';
import { Tensor } from './tensor';
import { expectBoolean, expectInteger, expectOneOf, expectTensor, float32Data } from './validate';

export interface MoEConfig {
  dModel: number;
  dHidden: number;
  numExperts: number;
  /** Experts per token, 1..numExperts (numExperts = soft routing). */
  topK: number;
  /** Expert activation; 'swiglu' (the default) is silu(x W1^T) * (x W3^T), as in Mixtral. */
  activation?: Activation;
  /** Renormalise the top-k softmax weights to sum to 1 (Mixtral / HF, the default); false keeps the raw probabilities. */
  normalizeTopK?: boolean;
  /** Use at most this many threads of the shared pool for this layer; 0 (the default) = all, see setThreads. */
  threads?: number;
}

export interface MoEWeights extends ExpertWeights {
  /** [numExperts, dModel]: router logits = x router^T. */
  router: Tensor;
}

export interface Routing {
  topK: number;
  /** [tokens * topK] expert per slot, token-major (token t at t*topK .. t*topK+topK-1), descending weight. */
  experts: Int32Array;
  /** [tokens * topK] routing weight per slot. */
  weights: Float32Array;
  /** [numExperts] slots each expert received. */
  tokensPerExpert: Int32Array;
  /** [tokens, numExperts] router logits. */
  logits: Tensor<'float32'>;
}

export interface MoEOutput {
  /** [tokens, dModel]: sum over the selected experts of weight * expert(x). */
  output: Tensor<'float32'>;
  routing: Routing;
}

/**
 * A Mixture-of-Experts layer (Shazeer et al. 2017 eq. 1: y = sum_i G(x)_i E_i(x)) with Mixtral's routing:
 * softmax over the router logits, top-k, renormalised. Weights are packed once here; forward runs the
 * native router, dispatch, grouped expert GEMMs (activation fused) and combine.
 */
export class MoELayer {
  readonly config: Readonly<Required<MoEConfig>>;
  private handle: NativeLayer | undefined;

  constructor(config: MoEConfig, weights: MoEWeights) {
    this.config = checkConfig(config);
    const { dModel, dHidden, numExperts, topK, activation, normalizeTopK, threads } = this.config;
    if (typeof weights !== 'object' || weights === null) throw typeError('weights to be an object of Tensors', describe(weights));
    const router = float32Data(
      expectTensor(weights.router, 'weights.router', ['float32', 'float16', 'bfloat16'], [numExperts, dModel], ['numExperts', 'dModel']),
    );
    const a = expertArrays(weights, { numExperts, dModel, dHidden, activation });
    this.handle = new (native().NativeLayer)(
      dModel, dHidden, numExperts, topK, activation, normalizeTopK, threads, router, a.w1, a.w3, a.w2, a.b1, a.b3, a.b2,
    );
  }

  /**
   * A layer with seeded random weights, nn.Linear-like scale (std 1/sqrt(fan_in)); biases only when
   * `bias: true`. The same seed gives the same layer everywhere.
   */
  static random(config: MoEConfig, options: { seed?: number; bias?: boolean } = {}): MoELayer {
    const c = checkConfig(config);
    const seed = options.seed ?? 0;
    const rng = new Random(seed);
    const next = () => rng.nextUint32();
    const { dModel: d, dHidden: h, numExperts: e } = c;
    const gated = c.activation === 'swiglu' || c.activation === 'geglu';
    const weights: MoEWeights = {
      router: Tensor.randn([e, d], { seed: next(), std: 1 / Math.sqrt(d) }),
      w1: Tensor.randn([e, h, d], { seed: next(), std: 1 / Math.sqrt(d) }),
      w3: gated ? Tensor.randn([e, h, d], { seed: next(), std: 1 / Math.sqrt(d) }) : undefined,
      w2: Tensor.randn([e, d, h], { seed: next(), std: 1 / Math.sqrt(h) }),
    };
    if (options.bias) {
      weights.b1 = Tensor.randn([e, h], { seed: next(), std: 0.1 });
      if (gated) weights.b3 = Tensor.randn([e, h], { seed: next(), std: 0.1 });
      weights.b2 = Tensor.randn([e, d], { seed: next(), std: 0.1 });
    }
    return new MoELayer(c, weights);
  }

  get disposed(): boolean {
    return this.handle === undefined;
  }

  /** Bytes of packed weights the layer holds (router and experts). */
  get packedBytes(): number {
    return this.native().packedBytes();
  }

  /** Runs the layer off the event loop. x: float32 [tokens, dModel]; it is read, never modified. */
  async forward(x: Tensor): Promise<MoEOutput> {
    const { handle, data, tokens } = this.prepare(x);
    return this.wrap(await handle.forward(data, tokens), tokens);
  }

  /** The same as forward, on the calling thread. */
  forwardSync(x: Tensor): MoEOutput {
    const { handle, data, tokens } = this.prepare(x);
    return this.wrap(handle.forwardSync(data, tokens), tokens);
  }

  /** Frees the packed weights; a forward already running finishes first. Later calls throw. */
  dispose(): void {
    this.handle?.dispose();
    this.handle = undefined;
  }

  private native(): NativeLayer {
    if (!this.handle) throw typeError('a layer that is not disposed', 'a disposed MoELayer');
    return this.handle;
  }

  private prepare(x: Tensor) {
    const handle = this.native();
    const xs = expectTensor(x, 'x', ['float32'], [null, this.config.dModel], ['tokens', 'dModel']);
    const tokens = xs.shape[0];
    expectInteger(tokens, 'x.shape[0] (tokens)');
    return { handle, data: xs.data, tokens };
  }

  private wrap(r: NativeForwardResult, tokens: number): MoEOutput {
    return {
      output: Tensor.from(r.output, [tokens, this.config.dModel]),
      routing: {
        topK: this.config.topK,
        experts: r.experts,
        weights: r.weights,
        tokensPerExpert: r.tokensPerExpert,
        logits: Tensor.from(r.logits, [tokens, this.config.numExperts]),
      },
    };
  }
}

function checkConfig(config: MoEConfig): Required<MoEConfig> {
  if (typeof config !== 'object' || config === null) throw typeError('config to be an object', describe(config));
  const numExperts = expectInteger(config.numExperts, 'config.numExperts');
  return {
    dModel: expectInteger(config.dModel, 'config.dModel'),
    dHidden: expectInteger(config.dHidden, 'config.dHidden'),
    numExperts,
    topK: expectInteger(config.topK, `config.topK (numExperts = ${numExperts})`, 1, numExperts),
    activation: expectOneOf(config.activation ?? 'swiglu', 'config.activation', ACTIVATIONS),
    normalizeTopK: expectBoolean(config.normalizeTopK ?? true, 'config.normalizeTopK'),
    threads: config.threads === undefined ? 0 : expectInteger(config.threads, 'config.threads', 0, 256),
  };
}
