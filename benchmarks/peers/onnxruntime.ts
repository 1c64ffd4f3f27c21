/**
 * onnxruntime's com.microsoft.MoE operator as a peer (its semantics as we rely on them: docs/peers.md): a two-node graph,
 * router MatMul then MoE, on the same weights. The CPU kernel needs fused, interleaved SwiGLU
 * (swiglu_fusion = 1): fc1 rows [w1_0, w3_0, w1_1, w3_1, ...] of shape [E, 2 * dHidden, dModel].
 */
import * as fs from 'fs';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import type { InferenceSession } from 'onnxruntime-node';
import { MoEWeights } from '../../lib';

export interface OrtMoE {
  run(x: Float32Array, tokens: number): Promise<Float32Array>;
}

/** An initializer held in the model, or, with `folder`, in a file beside it (ONNX external data: one protobuf
 * message holds at most 2 GB). */
function initializer(name: string, dims: number[], data: Float32Array, folder?: string): onnx.ITensorProto {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (!folder) return { name, dims, dataType: onnx.TensorProto.DataType.FLOAT, rawData: bytes };
  fs.writeFileSync(path.join(folder, `${name}.bin`), bytes);
  return {
    name,
    dims,
    dataType: onnx.TensorProto.DataType.FLOAT,
    dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
    externalData: [
      { key: 'location', value: `${name}.bin` },
      { key: 'offset', value: '0' },
      { key: 'length', value: String(bytes.byteLength) },
    ],
  };
}

/** The ORT MoE model for a SwiGLU layer, normalised top-k routing (Mixtral). */
export function buildOrtMoEModel(
  config: { dModel: number; dHidden: number; numExperts: number; topK: number },
  w: MoEWeights,
  externalFolder?: string,
): Uint8Array {
  const { dModel: d, dHidden: h, numExperts: e, topK: k } = config;
  const routerT = new Float32Array(d * e); // [d, E] = router^T for MatMul
  const router = w.router.data as Float32Array;
  for (let i = 0; i < e; i++) for (let j = 0; j < d; j++) routerT[j * e + i] = router[i * d + j];
  const fc1 = new Float32Array(e * 2 * h * d);
  const w1 = w.w1.data as Float32Array;
  const w3 = w.w3!.data as Float32Array;
  for (let x = 0; x < e; x++)
    for (let r = 0; r < h; r++) {
      fc1.set(w1.subarray((x * h + r) * d, (x * h + r + 1) * d), (x * h + r) * 2 * d);
      fc1.set(w3.subarray((x * h + r) * d, (x * h + r + 1) * d), ((x * h + r) * 2 + 1) * d);
    }
  const attr = (name: string, value: number | string): onnx.IAttributeProto =>
    typeof value === 'number'
      ? Number.isInteger(value)
        ? { name, type: onnx.AttributeProto.AttributeType.INT, i: value }
        : { name, type: onnx.AttributeProto.AttributeType.FLOAT, f: value }
      : { name, type: onnx.AttributeProto.AttributeType.STRING, s: new TextEncoder().encode(value) };
  const valueInfo = (name: string, dims: (number | string)[]): onnx.IValueInfoProto => ({
    name,
    type: {
      tensorType: {
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: { dim: dims.map((v) => (typeof v === 'number' ? { dimValue: v } : { dimParam: v })) },
      },
    },
  });
  const model: onnx.IModelProto = {
    irVersion: 8,
    opsetImport: [
      { domain: '', version: 17 },
      { domain: 'com.microsoft', version: 1 },
    ],
    graph: {
      name: 'moe',
      node: [
        { opType: 'MatMul', input: ['input', 'router_t'], output: ['router_logits'], name: 'router' },
        {
          opType: 'MoE',
          domain: 'com.microsoft',
          name: 'moe',
          input: ['input', 'router_logits', 'fc1', '', 'fc2'],
          output: ['output'],
          attribute: [
            attr('k', k),
            attr('activation_type', 'swiglu'),
            attr('swiglu_fusion', 1),
            attr('normalize_routing_weights', 1),
            { name: 'activation_alpha', type: onnx.AttributeProto.AttributeType.FLOAT, f: 1 },
            { name: 'activation_beta', type: onnx.AttributeProto.AttributeType.FLOAT, f: 0 },
          ],
        },
      ],
      initializer: [
        initializer('router_t', [d, e], routerT),
        initializer('fc1', [e, 2 * h, d], fc1, externalFolder),
        initializer('fc2', [e, d, h], w.w2.data as Float32Array, externalFolder),
      ],
      input: [valueInfo('input', ['tokens', d])],
      output: [valueInfo('output', ['tokens', d])],
    },
  };
  return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
}

/** Loads onnxruntime-node and a session for the layer; undefined (with the reason) when it cannot. */
export async function createOrtMoE(
  config: { dModel: number; dHidden: number; numExperts: number; topK: number },
  weights: MoEWeights,
  threads: number,
  spinning = false,
  externalFolder?: string,
): Promise<OrtMoE | string> {
  let ort: typeof import('onnxruntime-node');
  try {
    ort = require('onnxruntime-node');
  } catch (err) {
    return `onnxruntime-node is not installed (${(err as Error).message.split('\n')[0]})`;
  }
  const model = buildOrtMoEModel(config, weights, externalFolder);
  let source: Uint8Array | string = model;
  if (externalFolder) {
    source = path.join(externalFolder, 'moe.onnx'); // external data resolves relative to the model file
    fs.writeFileSync(source, model);
  }
  const session: InferenceSession = await ort.InferenceSession.create(source as string, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionProviders: ['cpu'],
    // ORT's workers spin after each run by default, which would steal the cores from whatever runs next in
    // an alternating benchmark; with spinning off every implementation gets an idle machine.
    extra: { session: { intra_op: { allow_spinning: spinning ? '1' : '0' } } },
  });
  return {
    async run(x, tokens) {
      const out = await session.run({ input: new ort.Tensor('float32', x, [tokens, config.dModel]) });
      return out.output.data as Float32Array;
    },
  };
}
