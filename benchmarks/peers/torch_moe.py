"""PyTorch on the CPU as a benchmark peer: a Hugging Face-style MoE (softmax, top-k, renormalise, a loop over
the experts that received tokens, index_add_), serving timing requests from the Node harness on stdin.

Protocol (one JSON object per line):
  {"cmd": "load", "x": path, "tokens": T, "inputs": N} -> {"loaded": N}: N inputs of T rows, float32, back to back;
  {"cmd": "run", "first": i, "reps": R, "out": path|null} -> {"times_ms": [...]} after R timed forwards cycling
  through the inputs from the i-th; the output of the last is written to `out` as float32.
Started as: torch_moe.py DIR dModel dHidden numExperts topK threads [dtype], with router/w1/w3/w2 .f32 files in
DIR. dtype 'bfloat16' converts the weights and each input to bf16 (PyTorch's bf16 path: oneDNN's AVX512-BF16 matmuls
where the CPU has them); the output is written as float32.
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def main():
    folder, d, h, e, k, threads = sys.argv[1], *map(int, sys.argv[2:7])
    dtype = torch.bfloat16 if len(sys.argv) > 7 and sys.argv[7] == "bfloat16" else torch.float32
    torch.set_num_threads(threads)
    load = lambda name, shape: torch.from_numpy(np.fromfile(os.path.join(folder, name + ".f32"), dtype=np.float32).reshape(shape)).to(dtype)
    router, w1, w3, w2 = load("router", (e, d)), load("w1", (e, h, d)), load("w3", (e, h, d)), load("w2", (e, d, h))

    @torch.no_grad()
    def forward(x):
        probs = F.softmax(x @ router.T, dim=-1, dtype=torch.float32)  # (a bf16 model's HF code does the same)
        weights, selected = torch.topk(probs, k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(x)
        mask = F.one_hot(selected, num_classes=e).permute(2, 1, 0)
        for expert in torch.nonzero(mask.sum(dim=(-1, -2)) > 0).flatten().tolist():
            nth, idx = torch.where(mask[expert])
            xs = x[idx]
            y = (F.silu(xs @ w1[expert].T) * (xs @ w3[expert].T)) @ w2[expert].T
            out.index_add_(0, idx, y * weights[idx, nth, None].to(dtype))
        return out

    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    inputs = []
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "load":
            inputs = list(torch.from_numpy(np.fromfile(req["x"], dtype=np.float32).reshape(req["inputs"], req["tokens"], d)).to(dtype))
            print(json.dumps({"loaded": len(inputs)}), flush=True)
            continue
        times = []
        for rep in range(req["reps"]):
            x = inputs[(req["first"] + rep) % len(inputs)]
            t0 = time.perf_counter()
            out = forward(x)
            times.append((time.perf_counter() - t0) * 1e3)
        if req.get("out"):
            out.float().numpy().astype(np.float32).tofile(req["out"])
        print(json.dumps({"times_ms": times}), flush=True)


if __name__ == "__main__":
    main()
