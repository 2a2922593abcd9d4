#!/usr/bin/env python3
# The PyTorch side of lltrain's speed comparisons: trains the same
# transformers.LlamaForCausalLM shape as an lltrain preset, eager fp32 with
# AdamW, on random tokens, and prints tokens/s; or, with --gemm N, times
# N^3 matrix products (cuBLAS on a GPU) in the three layouts of a linear
# layer. Needs torch (+ transformers for training):
#   python3 bench/pytorch_reference.py --preset 15M --device cpu --threads 16
#   python3 bench/pytorch_reference.py --gemm 4096 --device cuda --dtype tf32
import argparse
import time

import torch

PRESETS = {  # the same shapes as data/presets/*.conf
    "tiny": dict(vocab=4096, dim=192, layers=4, heads=6, kv=6, ffn=512, seq=128, batch=16, tied=True),
    "15M": dict(vocab=32000, dim=288, layers=6, heads=6, kv=6, ffn=768, seq=256, batch=8, tied=True),
    "110M": dict(vocab=32000, dim=768, layers=12, heads=12, kv=12, ffn=2048, seq=1024, batch=8, tied=True),
    "1B": dict(vocab=32000, dim=2048, layers=22, heads=32, kv=4, ffn=5632, seq=2048, batch=4, tied=False),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="15M", choices=PRESETS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--gemm", type=int, default=0)
    a = ap.parse_args()
    p = PRESETS[a.preset]
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.backends.cuda.matmul.allow_tf32 = a.dtype == "tf32"
    if a.gemm:
        time_gemms(a)
        return
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=p["vocab"], hidden_size=p["dim"], num_hidden_layers=p["layers"],
                      num_attention_heads=p["heads"], num_key_value_heads=p["kv"],
                      intermediate_size=p["ffn"], max_position_embeddings=p["seq"],
                      tie_word_embeddings=p["tied"], attn_implementation="eager")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(a.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    B, T = p["batch"], p["seq"]
    times = []
    try:
        run_steps(a, p, model, opt, times)
    except torch.OutOfMemoryError:
        peak = torch.cuda.max_memory_allocated() / 2**30 if a.device != "cpu" else 0
        print(f"pytorch {a.preset} {a.device} {a.dtype}: out of memory "
              f"(peak allocated {peak:.1f} GiB)")
        return
    dt = sum(times) / len(times)
    peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if a.device != "cpu" else ""
    print(f"pytorch {a.preset} {a.device} {a.dtype} threads={torch.get_num_threads()}: "
          f"{B * T / dt:.1f} tokens/s ({dt:.4f} s/step{peak})")


def time_gemms(a):
    """The best of ten N^3 products per layout after a warm-up, in TFLOP/s."""
    n = a.gemm
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    x = torch.rand(n, n, device=a.device, dtype=dtype)
    w = torch.rand(n, n, device=a.device, dtype=dtype)
    forms = [("NT (forward, x . W^T)", lambda: x @ w.t()),
             ("NN (input gradient, dout . W)", lambda: x @ w),
             ("TN (weight gradient, dout^T . x)", lambda: x.t() @ w)]
    for name, f in forms:
        f()
        best = float("inf")
        for _ in range(10):
            if a.device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            f()
            if a.device != "cpu":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        print(f"pytorch gemm {n}^3 {a.dtype} {name}: {2 * n ** 3 / best / 1e12:.2f} TFLOP/s")


def run_steps(a, p, model, opt, times):
    B, T = p["batch"], p["seq"]
    for step in range(a.steps + 1):
        x = torch.randint(0, p["vocab"], (B, T + 1), device=a.device)
        if a.device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(a.device if a.device != "cpu" else "cpu", dtype=torch.bfloat16,
                            enabled=a.dtype == "bf16"):
            logits = model(x[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(logits.float().view(-1, p["vocab"]), x[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if a.device != "cpu":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t0)


if __name__ == "__main__":
    main()
