#!/usr/bin/env python3
"""Cross-checks fromPretrained against PyTorch implementations of each family's MoE block.

    /usr/bin/python3 scripts/crosscheck-pretrained.py ROOT

ROOT holds one directory per fixture (test/pretrained/fixtures.ts wrote them: config.json, safetensors files), each
with crosscheck.json ({"layer", "tokens"}), x.f32 (the input, float32 [tokens, hidden]) and y.f32 (moe-kernels'
output with float32 weights). The blocks below follow transformers' modeling code for each family (torch.topk,
softmax, gather, the experts' loops), in float64; the safetensors files are parsed here by hand (no safetensors
package needed). Exits 0 when every fixture agrees within 2e-5 of the output's scale, 1 otherwise, and 3 when torch
is missing (the caller skips).
"""
import json
import os
import struct
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover
    print(f"crosscheck-pretrained: skipped ({e})")
    sys.exit(3)

torch.set_default_dtype(torch.float64)

FP4 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def e4m3(b):
    s = -1.0 if b & 0x80 else 1.0
    e, m = (b >> 3) & 15, b & 7
    if e == 15 and m == 7:
        return float("nan")
    return s * (m / 8 * 2.0**-6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))


E4M3 = torch.tensor([e4m3(b) for b in range(256)])


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        buf = raw[8 + n + b : 8 + n + e]
        shape = t["shape"]
        dt = t["dtype"]
        if dt == "F32":
            v = torch.from_numpy(np.frombuffer(buf, dtype=np.float32).copy()).double()
        elif dt == "F16":
            v = torch.from_numpy(np.frombuffer(buf, dtype=np.float16).copy()).double()
        elif dt == "BF16":
            bits = np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16
            v = torch.from_numpy(bits.view(np.float32).copy()).double()
        elif dt in ("U8", "F8_E4M3"):
            v = torch.from_numpy(np.frombuffer(buf, dtype=np.uint8).copy())
            if dt == "F8_E4M3":
                v = E4M3[v.long()]
        else:
            raise ValueError(f"{path}: {name}: dtype {dt}")
        out[name] = v.reshape(shape)
    return out


def load(dir):
    tensors = {}
    for f in sorted(os.listdir(dir)):
        if f.endswith(".safetensors"):
            tensors.update(read_safetensors(os.path.join(dir, f)))
    # FP8 weights with block scales (DeepSeek-V3): w * weight_scale_inv, per block
    for name in [n for n in tensors if n.endswith("_scale_inv")]:
        w = tensors[name[: -len("_scale_inv")]]
        s = tensors.pop(name)
        bs = -(-w.shape[0] // s.shape[0])
        tensors[name[: -len("_scale_inv")]] = w * s.repeat_interleave(bs, 0)[: w.shape[0]].repeat_interleave(bs, 1)[:, : w.shape[1]]
    # MXFP4 (gpt-oss): blocks [..., G, 16] + scales [..., G] -> [..., G * 32]
    for name in [n for n in tensors if n.endswith("_blocks")]:
        base = name[: -len("_blocks")]
        blocks, scales = tensors.pop(name), tensors.pop(base + "_scales")
        lut = torch.tensor(FP4)
        lo, hi = lut[(blocks & 0x0F).long()], lut[(blocks >> 4).long()]
        vals = torch.stack([lo, hi], dim=-1).reshape(*blocks.shape[:-1], 32)
        vals = torch.ldexp(vals, (scales.long() - 127).unsqueeze(-1))
        # transformers: [E, out, in] -> the parameter layout [E, in, out]
        tensors[base] = vals.reshape(*blocks.shape[:-2], -1).transpose(1, 2).contiguous()
    return tensors


def mlp(t, p, x, act=F.silu):
    return F.linear(act(F.linear(x, t[f"{p}.gate_proj.weight"])) * F.linear(x, t[f"{p}.up_proj.weight"]), t[f"{p}.down_proj.weight"])


def experts_loop(x, top_idx, top_w, expert):
    """transformers' expert loop: one_hot mask, then each hit expert on its tokens, index_add_."""
    out = torch.zeros_like(x)
    num = max(top_idx.max().item() + 1, 1)
    mask = F.one_hot(top_idx, num_classes=num).permute(2, 1, 0)
    for e in range(num):
        pos, tok = torch.where(mask[e])
        if tok.numel() == 0:
            continue
        out.index_add_(0, tok, expert(e, x[tok]) * top_w[tok, pos, None])
    return out


def mixtral(t, c, l, x):
    stacked = f"model.layers.{l}.mlp.experts.gate_up_proj" in t
    p = f"model.layers.{l}.mlp" if stacked else f"model.layers.{l}.block_sparse_moe"
    logits = F.linear(x, t[f"{p}.gate.weight"])
    probs = F.softmax(logits, dim=-1)
    w, idx = torch.topk(probs, c["num_experts_per_tok"], dim=-1)
    w = w / w.sum(dim=-1, keepdim=True)

    def expert(e, h):
        if stacked:
            gate, up = F.linear(h, t[f"{p}.experts.gate_up_proj"][e]).chunk(2, dim=-1)
            return F.linear(F.silu(gate) * up, t[f"{p}.experts.down_proj"][e])
        q = f"{p}.experts.{e}"
        return F.linear(F.silu(F.linear(h, t[f"{q}.w1.weight"])) * F.linear(h, t[f"{q}.w3.weight"]), t[f"{q}.w2.weight"])

    return experts_loop(x, idx, w, expert)


def qwen_like(shared):
    def block(t, c, l, x):
        p = f"model.layers.{l}.mlp"
        probs = F.softmax(F.linear(x, t[f"{p}.gate.weight"]), dim=-1)
        w, idx = torch.topk(probs, c["num_experts_per_tok"], dim=-1)
        if c.get("norm_topk_prob", False):
            w = w / w.sum(dim=-1, keepdim=True)
        y = experts_loop(x, idx, w, lambda e, h: mlp(t, f"{p}.experts.{e}", h))
        if shared:
            y = y + torch.sigmoid(F.linear(x, t[f"{p}.shared_expert_gate.weight"])) * mlp(t, f"{p}.shared_expert", x)
        return y

    return block


def deepseek_v2(t, c, l, x):
    p = f"model.layers.{l}.mlp"
    scores = F.linear(x, t[f"{p}.gate.weight"]).softmax(dim=-1)
    k = c["num_experts_per_tok"]
    if c["topk_method"] == "greedy":
        w, idx = torch.topk(scores, k=k, dim=-1)
    else:
        n, g = x.shape[0], c["n_group"]
        group_scores = scores.view(n, g, -1).max(dim=-1).values
        group_idx = torch.topk(group_scores, k=c["topk_group"], dim=-1)[1]
        mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
        score_mask = mask.unsqueeze(-1).expand(n, g, scores.shape[-1] // g).reshape(n, -1)
        w, idx = torch.topk(scores.masked_fill(~score_mask.bool(), 0.0), k=k, dim=-1)
    w = w * c["routed_scaling_factor"]
    return experts_loop(x, idx, w, lambda e, h: mlp(t, f"{p}.experts.{e}", h)) + mlp(t, f"{p}.shared_experts", x)


def deepseek_v3(t, c, l, x):
    p = f"model.layers.{l}.mlp"
    scores = F.linear(x, t[f"{p}.gate.weight"]).sigmoid()
    choice = scores + t[f"{p}.gate.e_score_correction_bias"].unsqueeze(0)
    n, g = x.shape[0], c["n_group"]
    group_scores = choice.view(n, g, -1).topk(2, dim=-1)[0].sum(dim=-1)
    group_idx = torch.topk(group_scores, k=c["topk_group"], dim=-1)[1]
    mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    score_mask = mask.unsqueeze(-1).expand(n, g, scores.shape[-1] // g).reshape(n, -1)
    idx = torch.topk(choice.masked_fill(~score_mask.bool(), float("-inf")), k=c["num_experts_per_tok"], dim=-1)[1]
    w = scores.gather(1, idx)
    if c.get("norm_topk_prob", True):
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    w = w * c["routed_scaling_factor"]
    return experts_loop(x, idx, w, lambda e, h: mlp(t, f"{p}.experts.{e}", h)) + mlp(t, f"{p}.shared_experts", x)


def gpt_oss(t, c, l, x):
    p = f"model.layers.{l}.mlp"
    logits = F.linear(x, t[f"{p}.router.weight"], t[f"{p}.router.bias"])
    top, idx = torch.topk(logits, c["num_experts_per_tok"], dim=-1)
    w = F.softmax(top, dim=1)
    gu, gub = t[f"{p}.experts.gate_up_proj"], t[f"{p}.experts.gate_up_proj_bias"]
    dn, dnb = t[f"{p}.experts.down_proj"], t[f"{p}.experts.down_proj_bias"]
    limit, alpha = c.get("swiglu_limit", 7.0), 1.702

    def expert(e, h):
        gate_up = h @ gu[e] + gub[e]
        gate, up = gate_up[..., ::2], gate_up[..., 1::2]
        gate = gate.clamp(min=None, max=limit)
        up = up.clamp(min=-limit, max=limit)
        glu = gate * torch.sigmoid(gate * alpha)
        return ((up + 1) * glu) @ dn[e] + dnb[e]

    return experts_loop(x, idx, w, expert)


BLOCKS = {
    "mixtral": mixtral,
    "qwen2_moe": qwen_like(True),
    "qwen3_moe": qwen_like(False),
    "olmoe": qwen_like(False),
    "deepseek_v2": deepseek_v2,
    "deepseek_v3": deepseek_v3,
    "gpt_oss": gpt_oss,
}


def main(root):
    failed = 0
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        spec_file = os.path.join(d, "crosscheck.json")
        if not os.path.exists(spec_file):
            continue
        spec = json.load(open(spec_file))
        config = json.load(open(os.path.join(d, "config.json")))
        x = torch.from_numpy(np.fromfile(os.path.join(d, "x.f32"), dtype=np.float32).copy()).double().reshape(spec["tokens"], -1)
        ours = torch.from_numpy(np.fromfile(os.path.join(d, "y.f32"), dtype=np.float32).copy()).double().reshape(x.shape)
        want = BLOCKS[config["model_type"]](load(d), config, spec["layer"], x)
        err = ((ours - want).abs().max() / want.abs().max()).item()
        ok = err < 2e-5
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name:16s} {config['model_type']:12s} relative error {err:.2e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
