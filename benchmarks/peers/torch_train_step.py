"""PyTorch autograd as the training-step peer (issue 19): the Hugging Face-style MoE of torch_moe.py (softmax, top-k,
renormalise, a loop over the experts that received tokens, index_add) with one parameter per expert matrix, as
Mixtral's modules hold them (slicing one stacked parameter instead makes autograd add a zero-padded full-size
gradient per expert: 40x slower here), float32, trained by forward, backward of L = <g, output> and
torch.optim.AdamW, each phase timed separately.

Started as: torch_train_step.py DIR dModel dHidden numExperts topK tokens threads reps, with router/w1/w3/w2/x/g
.f32 files in DIR. Writes the gradients of the first (untimed) step to DIR/grad_{router,w1,w3,w2,x}.f32 and prints
one JSON line: {"torch": version, "threads": n, "forward_ms": [...], "backward_ms": [...], "step_ms": [...]}.
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def main():
    folder = sys.argv[1]
    d, h, e, k, tokens, threads, reps = map(int, sys.argv[2:9])
    torch.set_num_threads(threads)
    load = lambda name, shape: torch.from_numpy(np.fromfile(os.path.join(folder, name + ".f32"), dtype=np.float32).reshape(shape).copy())
    router = torch.nn.Parameter(load("router", (e, d)))
    w1, w3, w2 = ([torch.nn.Parameter(m.clone()) for m in load(n, s)] for n, s in (("w1", (e, h, d)), ("w3", (e, h, d)), ("w2", (e, d, h))))
    x = load("x", (tokens, d)).requires_grad_(True)
    g = load("g", (tokens, d))
    opt = torch.optim.AdamW([router, *w1, *w3, *w2], lr=1e-4)

    def forward(x):
        probs = F.softmax(x @ router.T, dim=-1)
        weights, selected = torch.topk(probs, k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(x)
        mask = F.one_hot(selected, num_classes=e).permute(2, 1, 0)
        for expert in torch.nonzero(mask.sum(dim=(-1, -2)) > 0).flatten().tolist():
            nth, idx = torch.where(mask[expert])
            xs = x[idx]
            y = (F.silu(xs @ w1[expert].T) * (xs @ w3[expert].T)) @ w2[expert].T
            out = out.index_add(0, idx, y * weights[idx, nth, None])
        return out

    times = {"forward_ms": [], "backward_ms": [], "step_ms": []}
    for rep in range(reps + 1):
        opt.zero_grad(set_to_none=False)
        if x.grad is not None:
            x.grad.zero_()
        t0 = time.perf_counter()
        out = forward(x)
        t1 = time.perf_counter()
        out.backward(g)
        t2 = time.perf_counter()
        if rep == 0:  # the gradients of the first step, before any update
            stack = lambda ps: torch.stack([p.grad for p in ps])
            for name, t in (("router", router.grad), ("w1", stack(w1)), ("w3", stack(w3)), ("w2", stack(w2)), ("x", x.grad)):
                t.numpy().astype(np.float32).tofile(os.path.join(folder, "grad_" + name + ".f32"))
        opt.step()
        t3 = time.perf_counter()
        if rep == 0:
            continue  # warm-up
        times["forward_ms"].append((t1 - t0) * 1e3)
        times["backward_ms"].append((t2 - t1) * 1e3)
        times["step_ms"].append((t3 - t2) * 1e3)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), **times}), flush=True)


if __name__ == "__main__":
    main()
