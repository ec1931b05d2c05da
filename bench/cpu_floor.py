#!/usr/bin/env python3
"""What the small CPU config's step cannot go below, with LibTorch alone (docs/performance.md).

    .venv/bin/python bench/cpu_floor.py [--threads 2]

1. Matrix products: every product of one training step of bench/configs/small.yaml (8 x 256
   tokens, d 256, 6 layers, SwiGLU hidden 704, vocab 4096) forward and backward, each timed
   alone with hot operands (median of 7): their sum and GFLOP/s.
2. Attention at that shape (B 8, H 4, T 256, E 64, causal), forward + backward: LibTorch's CPU
   flash kernel against the math backend and a plain bmm + softmax version.
"""
import argparse
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def timed(f, n=7):
    f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[n // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    M = 8 * 256
    total = flops = 0.0
    for K, N, count in [(256, 768, 6), (256, 256, 6), (256, 1408, 6), (704, 256, 6), (256, 4096, 1)]:
        x, w, dy = torch.randn(M, K), torch.randn(N, K), torch.randn(M, N)
        t = timed(lambda: x @ w.t()) + timed(lambda: dy @ w) + timed(lambda: dy.t() @ x)
        total += count * t
        flops += count * 3 * 2 * M * K * N
    print(f"matrix products of one step: {total * 1e3:.1f} ms, {flops / 1e9:.1f} GFLOP, {flops / total / 1e9:.0f} GFLOP/s")

    B, H, T, E = 8, 4, 256, 64
    q, k, v = (torch.randn(B, H, T, E, requires_grad=True) for _ in range(3))
    g = torch.randn(B, H, T, E)
    causal = torch.ones(T, T, dtype=torch.bool).tril()

    def sdpa(backend):
        with sdpa_kernel(backend):
            F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(g)

    def bmm():
        s = (q @ k.transpose(-1, -2)) * E ** -0.5
        (torch.softmax(s.masked_fill(~causal, float("-inf")), -1) @ v).backward(g)

    for name, f in [("flash", lambda: sdpa(SDPBackend.FLASH_ATTENTION)), ("math", lambda: sdpa(SDPBackend.MATH)),
                    ("bmm", bmm)]:
        print(f"attention {name:5}: {timed(f, 10) * 1e3:.2f} ms per layer, forward + backward")


if __name__ == "__main__":
    main()
