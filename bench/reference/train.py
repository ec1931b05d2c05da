"""Replays an `ablate bench --dump FILE` run with the PyTorch reference model and times it.

    python bench/reference/train.py DUMP.safetensors [--compile] [--threads N] [--warmup N]

Loads the initial weights, the micro-batches and the per-step learning rates from the dump, runs
the same training step as Ablate (forward, masked cross entropy, backward, global-norm clip,
fused AdamW with Ablate's two parameter groups) and prints one JSON line: tokens/s over the steps
after the warm-up, and every step's loss (to compare with Ablate's, which the dump also holds).
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import LanguageModel, decays  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("--compile", action="store_true", help="torch.compile the forward and loss")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of the dump")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (cuda: bf16 autocast, TF32, as Ablate's bf16; "
                                                    "cpu: bf16 autocast when the dump's precision is bf16)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    with safe_open(args.dump, "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    m = json.loads(meta["model"])
    o = json.loads(meta["optimizer"])
    n_micro = int(meta["micro_batches_per_step"])
    n_steps = int(meta["steps"])
    clip = float(meta["clip"])
    lrs = tensors["lr"].tolist()
    ablate_losses = tensors["losses"].tolist()

    torch.manual_seed(0)
    model = LanguageModel(m)
    state = {k: v for k, v in tensors.items() if not k.startswith("batch.") and k not in ("lr", "losses")}
    model.load_state_dict(state, strict=True)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    amp = cuda or meta.get("precision") == "bf16"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.to(dev)
    model.train()
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if decays(n, p)], "weight_decay": o["weight_decay"]},
        {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lrs[0], betas=(o["beta1"], o["beta2"]), eps=o["eps"], fused=True)
    params = [p for _, p in named]

    def loss_fn(inputs, targets, mask):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(inputs)
        V = logits.shape[-1]
        ce = F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1), reduction="none")
        mask = mask.reshape(-1)
        return (ce * mask).sum() / mask.sum().clamp_min(1) / n_micro

    step_loss = torch.compile(loss_fn) if args.compile else loss_fn

    losses = []
    tokens = 0
    t0 = time.perf_counter()
    compile_s = None
    for step in range(n_steps):
        if step == args.warmup:
            t0 = time.perf_counter()
            tokens = 0
        for g in opt.param_groups:
            g["lr"] = lrs[step]
        total = torch.zeros((), device=dev)
        for mi in range(n_micro):
            p = f"batch.{step * n_micro + mi}."
            inputs, targets, mask = (tensors[p + k].to(dev, non_blocking=cuda) for k in ("inputs", "targets", "loss_mask"))
            loss = step_loss(inputs, targets, mask)
            loss.backward()
            total += loss.detach()
            tokens += inputs.numel()
        torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        opt.step()
        opt.zero_grad()
        losses.append(total)
        if cuda and (step == 0 or step == args.warmup - 1):
            torch.cuda.synchronize()
        if step == 0 and args.compile:
            compile_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    losses = [float(x) for x in losses]
    diff = max(abs(a - b) for a, b in zip(losses, ablate_losses))
    print(json.dumps({
        "framework": "pytorch-compile" if args.compile else "pytorch-eager",
        "threads": torch.get_num_threads(), "steps": n_steps - args.warmup, "seconds": seconds,
        "tokens_per_s": tokens / seconds, "compile_first_step_s": compile_s, "losses": losses,
        "ablate_losses": ablate_losses, "max_loss_diff": diff,
        "first_loss_diff": abs(losses[0] - ablate_losses[0]),
        "device_peak_bytes": torch.cuda.max_memory_allocated() if cuda else 0,
    }))


if __name__ == "__main__":
    main()
