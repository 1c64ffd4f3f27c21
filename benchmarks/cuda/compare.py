"""Times PyTorch on the GPU at the layer shape of device-check.sh and prints the comparison table.

Usage: compare.py moe.jsonl report.json
moe.jsonl: one JSON line per token count from moe_cuda_bench (device_ms, wall_ms, active_experts).
Peers (bf16, same shape): an HF-style loop over experts (softmax, top-k, renormalise, index_add_),
torch._grouped_mm on the expert segments where this torch has it, a dense bf16 matmul of the same FLOPs
shape (the TFLOP/s the card reaches in this run), and a device-to-device copy (the HBM bandwidth).
"""
import json
import sys

import torch
import torch.nn.functional as F

D, H, E, K = 4096, 14336, 8, 2


def timed(fn, reps=10):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def main():
    moe = [json.loads(line) for line in open(sys.argv[1]) if line.strip().startswith("{")]
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(1)
    router = torch.randn(E, D, device=dev, generator=g) * 0.02
    w1 = (torch.randn(E, H, D, device=dev, generator=g) * 0.02).to(torch.bfloat16)
    w3 = (torch.randn(E, H, D, device=dev, generator=g) * 0.02).to(torch.bfloat16)
    w2 = (torch.randn(E, D, H, device=dev, generator=g) * 0.02).to(torch.bfloat16)

    def route(x):
        probs = F.softmax(x.float() @ router.T, dim=-1)
        weights, selected = torch.topk(probs, K, dim=-1)
        return (weights / weights.sum(-1, keepdim=True)).to(x.dtype), selected

    def hf_loop(x):
        weights, selected = route(x)
        out = torch.zeros_like(x)
        mask = F.one_hot(selected, E).permute(2, 1, 0)
        for e in range(E):
            nth, idx = torch.where(mask[e])
            if idx.numel() == 0:
                continue
            xs = x[idx]
            y = (F.silu(xs @ w1[e].T) * (xs @ w3[e].T)) @ w2[e].T
            out.index_add_(0, idx, y * weights[idx, nth, None])
        return out

    grouped = getattr(torch, "_grouped_mm", None)

    def grouped_mm(x):
        weights, selected = route(x)
        flat = selected.flatten()
        order = torch.argsort(flat, stable=True)
        tokens = order // K
        counts = torch.bincount(flat, minlength=E)
        offs = torch.cumsum(counts, 0).to(torch.int32)
        xs = x[tokens]
        gate = grouped(xs, w1.transpose(1, 2), offs=offs)
        up = grouped(xs, w3.transpose(1, 2), offs=offs)
        y = grouped(F.silu(gate) * up, w2.transpose(1, 2), offs=offs)
        out = torch.zeros_like(x)
        out.index_add_(0, tokens, y * weights.flatten()[order, None])
        return out

    a = torch.randn(8192, D, device=dev, dtype=torch.bfloat16)
    b = torch.randn(D, H, device=dev, dtype=torch.bfloat16)
    dense_ms = timed(lambda: a @ b, 20)
    dense_tflops = 2 * 8192 * D * H / dense_ms / 1e9
    buf = torch.empty(2 * 1024**3 // 2, device=dev, dtype=torch.bfloat16)
    dst = torch.empty_like(buf)
    copy_ms = timed(lambda: dst.copy_(buf), 10)
    hbm_gbps = 2 * buf.numel() * 2 / copy_ms / 1e6  # read + write

    rows = []
    for m in moe:
        t = m["tokens"]
        x = torch.randn(t, D, device=dev, dtype=torch.bfloat16)
        flops = 2 * t * K * 3 * D * H
        active_bytes = m["active_experts"] * 3 * D * H * 2
        loop_ms = timed(lambda: hf_loop(x), 5)
        grouped_ms = None
        if grouped is not None:
            try:
                grouped_ms = timed(lambda: grouped_mm(x), 5)
            except Exception as e:  # noqa: BLE001 - report and go on
                print(f"torch._grouped_mm failed at T={t}: {e}")
        rows.append({
            "tokens": t, "moe_ms": m["device_ms"], "moe_wall_ms": m["wall_ms"],
            "moe_tflops": flops / m["device_ms"] / 1e9, "moe_gbps": active_bytes / m["device_ms"] / 1e6,
            "hf_loop_ms": loop_ms, "grouped_mm_ms": grouped_ms,
            "vs_dense": flops / m["device_ms"] / 1e9 / dense_tflops, "vs_hbm": active_bytes / m["device_ms"] / 1e6 / hbm_gbps,
            "speedup_vs_hf_loop": loop_ms / m["device_ms"],
        })
    print(f"\ntorch {torch.__version__}, {torch.cuda.get_device_name()}: dense bf16 matmul {dense_tflops:.0f} TFLOP/s, copy {hbm_gbps:.0f} GB/s")
    print("| tokens | moe-kernels ms (device) | wall ms | TFLOP/s | % dense | GB/s active | % HBM | HF loop ms | x HF loop | grouped_mm ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        gm = f"{r['grouped_mm_ms']:.3f}" if r["grouped_mm_ms"] else "-"
        print(f"| {r['tokens']} | {r['moe_ms']:.3f} | {r['moe_wall_ms']:.2f} | {r['moe_tflops']:.1f} | {100 * r['vs_dense']:.0f}% | "
              f"{r['moe_gbps']:.0f} | {100 * r['vs_hbm']:.0f}% | {r['hf_loop_ms']:.3f} | {r['speedup_vs_hf_loop']:.2f}x | {gm} |")
    targets = {
        "4096 tokens: >= 60% of dense bf16 TFLOP/s": next((r["vs_dense"] >= 0.6 for r in rows if r["tokens"] == 4096), None),
        "4096 tokens: >= 2x the HF loop": next((r["speedup_vs_hf_loop"] >= 2 for r in rows if r["tokens"] == 4096), None),
        "1 token: >= 60% of HBM bandwidth on the active experts": next((r["vs_hbm"] >= 0.6 for r in rows if r["tokens"] == 1), None),
    }
    for name, ok in targets.items():
        print(f"target {name}: {'met' if ok else 'MISSED' if ok is not None else 'not measured'}")
    json.dump({"dense_tflops": dense_tflops, "hbm_gbps": hbm_gbps, "rows": rows, "targets": targets}, open(sys.argv[2], "w"), indent=1)


if __name__ == "__main__":
    main()
