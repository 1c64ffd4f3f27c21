// Runs fuzz cases of the public API in this process and reports each on stdout, one JSON line per case:
//   node test/fuzz/run-cases.js <seed> <first> <count>
// A case calls one entry point with arguments drawn (seeded) from valid values and adversarial ones. It passes
// when the call returns (or its Promise settles) with finite results, or refuses with a TypeError or RangeError
// in the one error format; and when no argument it was given changed (applyCapacity changes its arrays by
// contract). A crash or a hang shows as a missing line: the parent (test/fuzz.test.ts) runs each case of a
// batch that died on its own, in a child process of its own, to name the culprit.
'use strict';
const path = require('path');
const moe = require(path.resolve(__dirname, '..', '..'));
const { MoELayer, Tensor, kernels, gating, losses, quant, ReadProbe } = moe;

const FORMAT = /^moe-kernels: expected [\s\S]+ but got [\s\S]*$/;
class UserError extends Error {} // what the fuzzer's own getters and proxies throw: the caller's error, passed through

// --- a seeded source (mulberry32) --------------------------------------------------------------------------------
function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n) => Math.floor(next() * n), pick: (list) => list[Math.floor(next() * list.length)], chance: (p) => next() < p };
}

// --- values -----------------------------------------------------------------------------------------------------
const ODD_NUMBERS = [0, -1, 1.5, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 32, 2 ** 53, 5e-324, -0, 1e30];
function oddScalar(r) {
  return r.pick([
    ...ODD_NUMBERS,
    null,
    undefined,
    'x',
    '3',
    true,
    {},
    [],
    [1, 2],
    10n,
    Symbol('s'),
    () => 1,
    new Proxy(
      {},
      {
        get() {
          throw new UserError('getter');
        },
      },
    ),
    Object.defineProperty({}, 'kind', {
      get() {
        throw new UserError('getter');
      },
    }),
  ]);
}

/** A Float32Array of n elements, in one of the shapes of memory a caller can hand over. */
function float32s(r, n, fill) {
  const kind = r.int(8);
  let a;
  if (kind === 0)
    a = new Float32Array(new ArrayBuffer(n * 4 + 4), 4, n); // an offset view
  else if (kind === 1) a = new Float32Array(new SharedArrayBuffer(Math.max(4, n * 4)), 0, n);
  else if (kind === 2)
    a = new Float32Array(new ArrayBuffer(n * 4, { maxByteLength: n * 8 + 8 }), 0, n); // resizable
  else if (kind === 3)
    a = new Float32Array(n + 3).subarray(3); // a subarray at an odd offset
  else a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = fill(i);
  return a;
}

function adversarialArray(r, n) {
  const kind = r.int(6);
  if (kind === 0) {
    const a = new Float32Array(n);
    structuredClone(a.buffer, { transfer: [a.buffer] }); // detached
    return a;
  }
  if (kind === 1) return Object.defineProperty(new Float32Array(Math.max(1, n >> 1)), 'length', { get: () => n }); // a lying length
  if (kind === 2) return { [Symbol.toStringTag]: 'Float32Array', length: n, 0: 1 }; // a faked tag
  if (kind === 3) return new Proxy(new Float32Array(n), {});
  if (kind === 4) return new Float64Array(n);
  return float32s(r, n, (i) => (i === 0 ? r.pick([NaN, Infinity, 1e30, -1e38]) : 0.1));
}

function tensorLike(r, shape, data) {
  const kind = r.int(10);
  if (kind === 0) return { dtype: 'float32', shape, data }; // plain object
  if (kind === 1)
    return { dtype: 'float32', shape: [...shape, 1].slice(0, shape.length), data: data.subarray(0, Math.max(0, data.length - 1)) };
  if (kind === 2) return Tensor.zeros(shape.map((d) => d + 1));
  if (kind === 3) return Tensor.zeros(shape, 'int32');
  return Tensor.from(data, shape);
}

/** A value for an argument that expects `valid()`: usually that, sometimes something adversarial. */
function arg(r, valid, bad) {
  const x = r.next();
  if (x < 0.7) return valid();
  if (x < 0.85 && bad) return bad();
  return oddScalar(r);
}

// --- snapshots: what the caller passed must come back unchanged ----------------------------------------------------
function snapshot(value, seen = new Set()) {
  if (value === null || typeof value !== 'object' || seen.has(value)) return undefined;
  seen.add(value);
  try {
    if (ArrayBuffer.isView(value))
      return value.byteLength === 0 ? [] : Array.from(value.slice ? value.slice() : [], (v) => (Number.isNaN(v) ? 'NaN' : String(v)));
    if (Array.isArray(value))
      return value.map((v) => snapshot(v, seen) ?? (typeof v === 'bigint' || typeof v === 'symbol' ? String(v) : v));
    if (Object.getPrototypeOf(value) !== Object.prototype && !(value instanceof Tensor)) return undefined;
    const out = {};
    for (const key of Object.keys(value)) {
      const d = Object.getOwnPropertyDescriptor(value, key);
      if (d.get) continue;
      const v = value[key];
      out[key] =
        snapshot(v, seen) ??
        (typeof v === 'number' && Number.isNaN(v)
          ? 'NaN'
          : typeof v === 'bigint' || typeof v === 'symbol' || typeof v === 'function'
            ? String(v)
            : v);
    }
    return out;
  } catch {
    return undefined;
  }
}

function finiteResult(value, depth = 0) {
  if (depth > 4 || value === null || value === undefined) return true;
  if (typeof value === 'number') return Number.isFinite(value);
  if (ArrayBuffer.isView(value)) {
    for (let i = 0; i < value.length; i++) if (typeof value[i] === 'number' && !Number.isFinite(value[i])) return false;
    return true;
  }
  if (typeof value === 'object') {
    for (const key of Object.keys(value)) if (key !== 'gate' && !finiteResult(value[key], depth + 1)) return false;
  }
  return true;
}

// --- the entry points --------------------------------------------------------------------------------------------
// --- files: crafted safetensors headers, checkpoints and paths (issue 34's generators) ----------------------------
const fs = require('fs');
const os = require('os');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-fuzz-'));
process.on('exit', () => fs.rmSync(scratch, { recursive: true, force: true }));
let fileCounter = 0;
const scratchFile = (name) => path.join(scratch, `${fileCounter++}-${name}`);

/** A safetensors file's bytes with `header` (text) and `dataBytes` zero bytes after it. */
function safetensorsBytes(header, dataBytes) {
  const json = Buffer.from(header);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, Buffer.alloc(dataBytes)]);
}

/** A path to a crafted safetensors file, or a path that is not one (a directory, nothing, a NUL byte, a FIFO). */
function craftedSafetensors(r) {
  const kind = r.int(12);
  const entry = (dtype, shape, begin, end) => `{"dtype":"${dtype}","shape":${JSON.stringify(shape)},"data_offsets":[${begin},${end}]}`;
  const write = (header, data) => {
    const f = scratchFile('crafted.safetensors');
    fs.writeFileSync(f, safetensorsBytes(header, data));
    return f;
  };
  switch (kind) {
    case 0:
      return write(`{"t":${entry('F32', [2, 2], 0, 16)}}`, 16); // valid
    case 1:
      return write(`{"t":${entry('F32', [1], 0, 4)},"t":${entry('I32', [1], 0, 4)}}`, 4); // a name twice
    case 2:
      return write(`{"__metadata__":{},"__metadata__":{"a":"b"}}`, 0);
    case 3:
      return write(`{"t":${'['.repeat(r.pick([200, 5000, 100000]))}}`, 0); // deep (and unclosed)
    case 4:
      return write(`{"__proto__":${entry('F32', [1], 0, 4)}}`, 4);
    case 5:
      return write(`{"t":${entry('F32', [r.pick([2 ** 40, 2 ** 53, 1e300, -1, 1.5]), 4], 0, 16)}}`, 16);
    case 6:
      return write(`{"t":${entry('F32', [4], 0, 16)}}`, r.pick([0, 8, 15])); // data shorter than the offsets
    case 7:
      return write(r.pick(['not json', '[]', '"s"', '{"t":5}', '{"t":{"dtype":"F32"}}']), 0);
    case 8:
      return scratch; // a directory
    case 9:
      return path.join(scratch, 'missing', 'nothing.safetensors');
    case 10:
      return 'a\0b.safetensors';
    default: {
      const f = scratchFile('fifo.safetensors');
      return require('child_process').spawnSync('mkfifo', [f]).status === 0 ? f : scratch;
    }
  }
}

/** A tiny Mixtral checkpoint directory (weights written by the call) whose config.json numbers come from the generator. */
function craftedCheckpoint(r) {
  const dir = scratchFile('ckpt');
  fs.mkdirSync(dir);
  const odd = () => r.pick([0, -1, 1.5, 1e9, 2 ** 53, 1e300, NaN, null, '4', 9, 3]);
  const config = {
    model_type: 'mixtral',
    hidden_size: 8,
    intermediate_size: 8,
    num_local_experts: 4,
    num_experts_per_tok: 2,
    num_hidden_layers: 1,
    hidden_act: 'silu',
  };
  for (const key of Object.keys(config)) if (key !== 'model_type' && r.chance(0.2)) config[key] = odd();
  const text = r.chance(0.1) ? '{"a":' + '['.repeat(100000) : JSON.stringify(config);
  fs.writeFileSync(path.join(dir, 'config.json'), text);
  return dir;
}

function entryPoints(r) {
  const T = r.pick([1, 2, 3, 7, 33]);
  const D = r.pick([1, 3, 8, 17]);
  const H = r.pick([1, 5, 12]);
  const E = r.pick([1, 2, 4, 9]);
  const K = 1 + r.int(E);
  const xData = () => float32s(r, T * D, (i) => Math.sin(i * 1.7));
  const x = () => tensorLike(r, [T, D], xData());
  const logits = () =>
    tensorLike(
      r,
      [T, E],
      float32s(r, T * E, (i) => Math.cos(i * 0.9)),
    );
  const config = () => ({
    dModel: arg(r, () => D),
    dHidden: arg(r, () => H),
    numExperts: arg(r, () => E),
    topK: arg(r, () => K),
    ...(r.chance(0.2)
      ? {
          activation: arg(
            r,
            () => r.pick(['swiglu', 'gelu', 'relu']),
            () => 'bogus',
          ),
        }
      : {}),
    ...(r.chance(0.2)
      ? {
          router: arg(
            r,
            () => r.pick([{ kind: 'topK' }, { kind: 'soft' }, { kind: 'switch' }, { kind: 'expertChoice', capacityFactor: 1 }]),
            () => ({ kind: 'nope' }),
          ),
        }
      : {}),
    ...(r.chance(0.2)
      ? {
          weightDtype: arg(
            r,
            () => r.pick(['float32', 'bfloat16', 'float16', 'int8', 'int4']),
            () => 'int3',
          ),
        }
      : {}),
    ...(r.chance(0.1)
      ? {
          groupSize: arg(
            r,
            () => r.pick([8, 32, 'row']),
            () => r.pick([12, 0, -8, 'col', 1.5]),
          ),
        }
      : {}),
  });
  const layer = () => MoELayer.random({ dModel: D, dHidden: H, numExperts: E, topK: K }, { seed: 1 });
  const packed = () =>
    new kernels.PackedExperts({
      w1: Tensor.randn([E, H, D], { seed: 2 }),
      w3: Tensor.randn([E, H, D], { seed: 3 }),
      w2: Tensor.randn([E, D, H], { seed: 4 }),
    });
  const experts = () => Int32Array.from({ length: T * K }, (_, i) => i % E);
  const plan = () => kernels.dispatch(experts(), E);
  const gate = () => gating.topK({ data: new Float64Array(T * E).map((_, i) => Math.sin(i)), shape: [T, E] }, { k: K });
  return [
    [
      'Tensor.from',
      () => [
        arg(r, xData, () => adversarialArray(r, T * D)),
        arg(
          r,
          () => [T, D],
          () => [T, -1],
        ),
        r.chance(0.8) ? undefined : oddScalar(r),
      ],
      (a) => Tensor.from(...a),
      { anyValues: true },
    ], // a tensor may hold NaN
    [
      'Tensor.randn',
      () => [
        arg(
          r,
          () => [T, D],
          () => [2 ** 20, 2 ** 20],
        ),
        arg(
          r,
          () => ({ seed: r.int(100) }),
          () => ({ seed: r.pick([-1, 1.5, NaN, 'abc', {}]) }),
        ),
      ],
      (a) => Tensor.randn(...a),
    ],
    [
      'MoELayer',
      () => [
        config(),
        arg(r, () => ({
          router: Tensor.randn([E, D], { seed: 1 }),
          w1: Tensor.randn([E, H, D]),
          w3: Tensor.randn([E, H, D]),
          w2: Tensor.randn([E, D, H]),
        })),
      ],
      (a) => new MoELayer(...a).dispose(),
    ],
    [
      'quant.quantize',
      () => [
        arg(
          r,
          () => Tensor.randn([T, D], { seed: 5 }),
          () => ({ dtype: 'float32', shape: [T, D], data: adversarialArray(r, T * D) }),
        ),
        arg(
          r,
          () => ({ dtype: r.pick(['int8', 'int4']), groupSize: r.pick([8, 'row', undefined]) }),
          () => r.pick([{ dtype: 'int2' }, { dtype: 'int8', groupSize: 3 }, null, 'int8']),
        ),
      ],
      (a) => quant.dequantize(quant.quantize(...a)),
    ],
    [
      'MoELayer.random',
      () => [
        config(),
        arg(
          r,
          () => ({ seed: r.int(1000) }),
          () => r.pick([1, 'x', null, { seed: -1 }]),
        ),
      ],
      (a) => MoELayer.random(...a).dispose(),
    ],
    [
      'forwardSync',
      () => [
        layer(),
        arg(r, x, () => tensorLike(r, [T, D], adversarialArray(r, T * D))),
        r.chance(0.7)
          ? undefined
          : arg(
              r,
              () => ({ out: Tensor.zeros([T, D]) }),
              () => ({ out: Tensor.zeros([T, D + 1]) }),
            ),
      ],
      ([l, ...a]) => {
        try {
          return l.forwardSync(...a);
        } finally {
          l.dispose();
        }
      },
      { mutates: [2] },
    ], // out is written
    [
      'forward',
      () => [
        layer(),
        arg(r, x, () => tensorLike(r, [T, D], adversarialArray(r, T * D))),
        r.chance(0.7) ? undefined : { out: Tensor.zeros([T, D]) },
      ],
      async ([l, ...a]) => {
        try {
          return await l.forward(...a);
        } finally {
          l.dispose();
        }
      },
      { mutates: [2] },
    ],
    [
      'gateGradients',
      () => [layer(), x()],
      ([l, xx]) => {
        try {
          const res = l.forwardSync(xx);
          return l.gateGradients(
            xx,
            arg(
              r,
              () => res,
              () => ({ routing: { logits: { dtype: 'float32', shape: [T, E], data: new Float32Array(1) } } }),
            ),
            arg(
              r,
              () => Tensor.randn([T, D]),
              () => Tensor.from(new Float32Array(T * D).fill(NaN), [T, D]),
            ),
          );
        } finally {
          l.dispose();
        }
      },
    ],
    [
      'kernels.routerLogits',
      () => [
        arg(r, x),
        arg(
          r,
          () => Tensor.randn([E, D]),
          () => Tensor.from(new Float32Array(E * D).fill(NaN), [E, D]),
        ),
      ],
      (a) => kernels.routerLogits(...a),
    ],
    ['kernels.topK', () => [arg(r, logits), arg(r, () => K), r.chance(0.8) ? undefined : oddScalar(r)], (a) => kernels.topK(...a)],
    [
      'kernels.dispatch',
      () => [
        arg(r, experts, () => Int32Array.from([0, E + 3, -2])),
        arg(
          r,
          () => E,
          () => r.pick([2 ** 31, 2 ** 24 + 1, 0]),
        ),
      ],
      (a) => kernels.dispatch(...a),
    ],
    [
      'kernels.expertFFN',
      () => [
        packed(),
        arg(r, x),
        arg(r, plan, () => {
          const p = plan();
          p.order[0] = p.order.length > 1 ? p.order[1] : 99;
          return p;
        }),
        arg(r, () => K),
      ],
      ([p, ...a]) => {
        try {
          return kernels.expertFFN(a[0], p, a[1], a[2]);
        } finally {
          p.dispose();
        }
      },
    ],
    [
      'kernels.expertFFNAsync',
      () => [packed(), x(), plan()],
      async ([p, xx, pl]) => {
        try {
          const pending = kernels.expertFFNAsync(xx, p, pl, K);
          pl.order.fill(1 << 30);
          return await pending;
        } finally {
          p.dispose();
        }
      },
      { mutates: [2] },
    ], // the case changes the plan itself
    [
      'kernels.combine',
      () => [
        arg(r, () => Tensor.randn([T * K, D])),
        arg(
          r,
          () => new Float32Array(T * K).fill(0.5),
          () => new Float32Array(T * K).fill(NaN),
        ),
        arg(r, () => K),
      ],
      (a) => kernels.combine(...a),
    ],
    [
      'gating.topK',
      () => [
        arg(r, logits),
        arg(
          r,
          () => ({ k: K }),
          () => ({ k: r.pick([0, E + 1, 1.5]) }),
        ),
      ],
      (a) => gating.topK(...a),
    ],
    ['gating.soft', () => [arg(r, logits)], (a) => gating.soft(...a)],
    [
      'gating.switchTop1',
      () => [
        arg(r, logits),
        r.chance(0.5)
          ? undefined
          : arg(
              r,
              () => ({ capacityFactor: 1.25 }),
              () => ({ capacityFactor: r.pick([0, NaN, -1]) }),
            ),
      ],
      (a) => gating.switchTop1(...a),
    ],
    [
      'gating.expertChoice',
      () => [
        arg(r, logits),
        arg(
          r,
          () => ({ capacityFactor: 1 }),
          () => ({ capacityFactor: NaN }),
        ),
      ],
      (a) => gating.expertChoice(...a),
    ],
    [
      'gating.sigmoidBias',
      () => [
        arg(r, logits),
        arg(
          r,
          () => ({ k: K }),
          () => ({ k: K, bias: [NaN] }),
        ),
      ],
      (a) => gating.sigmoidBias(...a),
    ],
    [
      'gating.backward',
      () => [
        arg(r, gate, () => ({ ...gate() })),
        arg(
          r,
          () => new Float64Array(T * K).fill(0.1),
          () => r.pick([new Float64Array(T * K).fill(NaN), new Float64Array(1)]),
        ),
      ],
      (a) => gating.backward(...a),
    ],
    [
      'gating.topKBackward',
      () => [arg(r, gate, () => gating.soft({ data: new Float64Array(T * E), shape: [T, E] })), new Float64Array(T * K)],
      (a) => gating.topKBackward(...a),
    ],
    [
      'gating.applyCapacity',
      () => [
        experts(),
        new Float64Array(T * K).fill(0.5),
        new Float64Array(T * K),
        arg(
          r,
          () => T,
          () => 2 ** 31,
        ),
        arg(r, () => K),
        arg(r, () => E),
        arg(r, () => 1),
        arg(
          r,
          () => 'position',
          () => 'bogus',
        ),
      ],
      (a) => gating.applyCapacity(...a),
      { mutates: [0, 1] },
    ],
    [
      'gating.routerWeightGradient',
      () => [arg(r, () => ({ data: new Float64Array(T * E), shape: [T, E] })), arg(r, x)],
      (a) => gating.routerWeightGradient(...a),
    ],
    [
      'losses.cvSquared',
      () => [
        arg(
          r,
          () => new Float64Array(E).fill(1),
          () => [NaN],
        ),
        r.chance(0.7)
          ? undefined
          : arg(
              r,
              () => ({ variance: 'sample' }),
              () => ({ variance: 'bogus' }),
            ),
      ],
      (a) => losses.cvSquared(...a),
    ],
    [
      'losses.importanceLoss',
      () => [
        arg(r, gate, () => ({ experts: new Int32Array(1), weights: new Float64Array(1), topK: 1, numExperts: 2 ** 31 - 1 })),
        r.chance(0.6)
          ? undefined
          : arg(
              r,
              () => ({ coefficient: 0.01 }),
              () => ({ coefficient: r.pick([NaN, Infinity, 'x']) }),
            ),
      ],
      (a) => losses.importanceLoss(...a),
    ],
    [
      'losses.switchLoss',
      () => [
        arg(r, () => ({ data: new Float64Array(T * E).fill(1 / E), shape: [T, E] })),
        arg(
          r,
          () => Int32Array.from({ length: T }, (_, i) => i % E),
          () => Int32Array.from({ length: T }, () => E + 5),
        ),
        r.chance(0.6)
          ? undefined
          : arg(
              r,
              () => ({ alpha: 0.01 }),
              () => ({ alpha: Infinity }),
            ),
      ],
      (a) => losses.switchLoss(...a),
    ],
    [
      'losses.gshardLoss',
      () => [
        { data: new Float64Array(T * E).fill(1 / E), shape: [T, E] },
        Int32Array.from({ length: T }, (_, i) => i % E),
        arg(
          r,
          () => ({ scale: 'paper' }),
          () => ({ scale: 'bogus' }),
        ),
      ],
      (a) => losses.gshardLoss(...a),
    ],
    ['losses.zLoss', () => [arg(r, logits)], (a) => losses.zLoss(...a)],
    [
      'losses.routingStats',
      () => [
        arg(
          r,
          () => ({ topK: K, experts: experts(), weights: new Float32Array(T * K).fill(0.5), tokensPerExpert: new Int32Array(E).fill(1) }),
          () => ({ topK: 0, experts: new Int32Array(0), weights: new Float32Array(0), tokensPerExpert: new Int32Array(2) }),
        ),
      ],
      (a) => losses.routingStats(...a),
    ],
    [
      'losses.softmaxBackward',
      () => [
        new Float64Array(T * E).fill(1 / E),
        new Float64Array(T * E),
        arg(
          r,
          () => E,
          () => 5e-324,
        ),
      ],
      (a) => losses.softmaxBackward(...a),
    ],
    [
      'losses.updateBalanceBias',
      () => [
        new Float64Array(E),
        Int32Array.from({ length: E }, (_, i) => i),
        arg(
          r,
          () => 0.001,
          () => NaN,
        ),
      ],
      (a) => losses.updateBalanceBias(...a),
    ],
    [
      'ReadProbe',
      () => [
        arg(
          r,
          () => 2 ** 20,
          () => r.pick([2 ** 40, 1, 2 ** 20 + 0.5]),
        ),
      ],
      (a) => new ReadProbe(...a).dispose(),
    ],
    [
      'safetensors.open',
      () => [craftedSafetensors(r)],
      async ([f]) => {
        const file = await moe.safetensors.open(f);
        try {
          for (const name of file.names()) await file.tensor(name);
          return file.names().length;
        } finally {
          await file.close();
        }
      },
    ],
    [
      'safetensors.save',
      () => [
        r.pick([scratchFile('saved.safetensors'), scratch, 'x\0y', path.join(scratch, 'missing', 'f')]),
        {
          [r.pick(['t', '__proto__', 'constructor', '__metadata__', 'x'.repeat(300)])]: arg(
            r,
            () => Tensor.randn([T, D], { seed: 3 }),
            () => ({
              dtype: r.pick(['F32', 'float32', 'Q4']),
              shape: r.pick([[T, D], [T], 'x', [-1, D]]),
              data: new Float32Array(T * D),
            }),
          ),
        },
        r.chance(0.7)
          ? undefined
          : arg(
              r,
              () => ({ ['__proto__']: 'm', a: 'b' }),
              () => ({ a: 5 }),
            ),
      ],
      async ([f, tensors, metadata]) => {
        await moe.safetensors.save(f, tensors, metadata);
        const file = await moe.safetensors.open(f);
        try {
          return file.names().length;
        } finally {
          await file.close();
        }
      },
    ],
    [
      'pretrained.fromPretrained',
      () => [craftedCheckpoint(r), r.chance(0.7) ? { weightDtype: r.pick(['float32', 'int8', 'bfloat16']) } : { layer: oddScalar(r) }],
      async ([dir, options]) => {
        const { tensors } = craftedCheckpointTensors();
        await moe.safetensors.save(path.join(dir, 'model.safetensors'), tensors);
        await moe.pretrained.inspect(dir);
        const layer = await MoELayer.fromPretrained(dir, options);
        try {
          return layer.forwardSync(Tensor.randn([2, 8], { seed: 1 })).output;
        } finally {
          layer.dispose();
        }
      },
    ],
    [
      'backward',
      () => {
        const l = layer();
        const other = layer();
        const xs = x();
        let result;
        try {
          result = l.forwardSync(xs);
        } catch {
          result = { routing: {} };
        }
        const results = [() => result, () => other.forwardSync(Tensor.randn([T, D], { seed: 9 })), () => ({ ...result }), () => undefined];
        return [
          l,
          xs,
          arg(
            r,
            () => result,
            () => r.pick(results)(),
          ),
          arg(
            r,
            () => Tensor.randn([T, D], { seed: 4 }),
            () => tensorLike(r, [T, D], adversarialArray(r, T * D)),
          ),
          r.chance(0.6)
            ? undefined
            : arg(
                r,
                () => ({ into: l.backward(xs, result, Tensor.randn([T, D])) }),
                () => ({ into: r.pick([{}, [], 5]) }),
              ),
          other,
        ];
      },
      async ([l, ...a]) => {
        const other = a.pop();
        try {
          // (no options: the sync one asks for fresh arrays, or both would return the layer's own dx)
          const sync = a[3] === undefined ? l.backward(a[0], a[1], a[2], { fresh: true }) : l.backward(...a);
          const async_ = await l.backwardAsync(...a);
          return [sync.dx, async_.dx];
        } finally {
          l.dispose();
          other.dispose();
        }
      },
      { mutates: [4] }, // into is written
    ],
    [
      'step',
      () => {
        const l = layer();
        const xs = Tensor.randn([T, D], { seed: 5 });
        const grads = l.backward(xs, l.forwardSync(xs), Tensor.randn([T, D], { seed: 6 }));
        if (r.chance(0.2)) grads.w1.data[0] = r.pick([NaN, Infinity]);
        return [
          l,
          arg(
            r,
            () => grads,
            () => r.pick([{}, { router: 5 }, { ...grads, w2: Tensor.zeros([1]) }]),
          ),
          arg(
            r,
            () =>
              r.pick([
                { kind: 'sgd', lr: 0.1 },
                { kind: 'adamw', lr: 1e-3 },
              ]),
            () =>
              r.pick([
                { kind: 'sgd', lr: NaN },
                { kind: 'adam', lr: 1 },
                { kind: 'adamw', lr: 1, momentum: 0.9 },
              ]),
          ),
        ];
      },
      ([l, g, o]) => {
        try {
          const pending = l.forward(Tensor.randn([T, D], { seed: 7 })); // a step beside it is refused
          try {
            l.step(g, o);
          } catch (e) {
            if (!/in flight/.test(e.message)) throw e;
          }
          return pending.then(() => l.step(g, o));
        } finally {
          setTimeout(() => l.dispose(), 0);
        }
      },
      { mutates: [0] },
    ],
    [
      'clipGradNorm',
      () => {
        const l = layer();
        const xs = Tensor.randn([T, D], { seed: 5 });
        const grads = l.backward(xs, l.forwardSync(xs), Tensor.randn([T, D], { seed: 6 }));
        l.dispose();
        if (r.chance(0.3)) grads.w2.data[0] = r.pick([NaN, Infinity, -Infinity]);
        return [
          arg(
            r,
            () => grads,
            () => r.pick([{ router: 5 }, { router: Tensor.zeros([2], 'int32') }, null]),
          ),
          arg(
            r,
            () => r.pick([1e-3, 1, 1e9]),
            () => r.pick([0, -1, NaN]),
          ),
        ];
      },
      (a) => moe.clipGradNorm(...a),
      { mutates: [0] }, // clipping scales the gradients in place
    ],
  ];
}

/** The tensors of craftedCheckpoint's checkpoint (written by the call, so that a refused config never leaves them). */
function craftedCheckpointTensors() {
  const D = 8,
    H = 8,
    E = 4;
  const tensors = { 'model.layers.0.block_sparse_moe.gate.weight': Tensor.randn([E, D], { seed: 1 }) };
  for (let e = 0; e < E; e++)
    for (const [w, shape] of [
      ['w1', [H, D]],
      ['w3', [H, D]],
      ['w2', [D, H]],
    ])
      tensors[`model.layers.0.block_sparse_moe.experts.${e}.${w}.weight`] = Tensor.randn(shape, { seed: 2 + e });
  return { tensors };
}

async function runCase(seed, index) {
  const r = rng(seed * 1_000_003 + index);
  const points = entryPoints(r);
  const [name, makeArgs, call, options = {}] = points[index % points.length];
  let args;
  try {
    args = makeArgs();
  } catch (err) {
    return { index, name, ok: true, note: 'argument construction refused' };
  }
  const before = args.map((a, i) => ((options.mutates ?? []).includes(i) ? undefined : snapshot(a)));
  let outcome;
  try {
    const result = await Promise.race([
      Promise.resolve(call(args)),
      new Promise((_, reject) => setTimeout(() => reject(new Error('fuzz: no answer in 10 s')), 10_000).unref()),
    ]);
    outcome = options.anyValues || finiteResult(result) ? { ok: true } : { ok: false, why: 'returned non-finite values' };
  } catch (err) {
    if (err instanceof UserError) outcome = { ok: true, note: "the caller's own error passed through" };
    else if (!(err instanceof Error)) outcome = { ok: false, why: `threw a non-Error: ${String(err)}` };
    else if ((err.name === 'TypeError' || err.name === 'RangeError') && FORMAT.test(err.message)) outcome = { ok: true, refused: err.name };
    else outcome = { ok: false, why: `refused outside the format: ${err.name}: ${err.message.slice(0, 200)}` };
  }
  const after = args.map((a, i) => ((options.mutates ?? []).includes(i) ? undefined : snapshot(a)));
  if (outcome.ok && JSON.stringify(before) !== JSON.stringify(after)) outcome = { ok: false, why: 'modified its input' };
  return { index, name, ...outcome };
}

async function main() {
  const [seed, first, count] = process.argv.slice(2).map(Number);
  for (let i = first; i < first + count; i++) process.stdout.write(JSON.stringify(await runCase(seed, i)) + '\n');
}

main().then(() => process.exit(0));
